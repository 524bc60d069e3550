"""Stage 3: the classifier on one generated:real mix (a *cell*), tested on the real test split.

A cell is (n_generated, n_real, seed, arm, generator seed). Its training images are drawn
class-balanced and seeded from the real pool and the arm's generated set (`sampling`); its
test images are always the manifest's real test split. The trainer is looked up by
`classifier.mode` (`trainers.TRAINERS`):

- `full` (`fine_tune`): fine-tune the whole image classifier (the paper's ViT-base), its
  batches from DataLoaders or preloaded on the device (`batches`);
- `linear_probe` (`linear_probe`): freeze the backbone (`backbone`), cache the head's input
  features once per image (`features`), and train only a linear head (the CPU profile).

Each cell (`cells`) writes `<run>/cells/<cell>/probabilities.safetensors` (its test
probabilities, fp16: `probabilities`) and `<run>/cells/<cell>/metrics.json`.
"""

from synthaug.classify.cells import CellRunner, run_cell

__all__ = ["CellRunner", "run_cell"]
