import numpy as np
import torch
from transformers import AutoImageProcessor, ViTForImageClassification

from synthaug.config import TinyFluxConfig, TinyVitConfig
from synthaug.families import family_named
from synthaug.models import make_accelerator, tiny_vit_dir
from synthaug.pretrain import tiny_base_dir

from .conftest import load_pipeline


def generate(pipe, size: int, seed: int = 0) -> np.ndarray:
    return pipe(
        "an aerial image of forest",
        height=size,
        width=size,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=16,
        output_type="np",
    ).images[0]


def test_flux_loads_and_accelerators_keep_attention_off_cudnn() -> None:
    """cuDNN's attention failed at FLUX.1-dev's shapes on an H200 (synthaug.models)."""
    source = tiny_base_dir("flux1", TinyFluxConfig())
    for load in (
        lambda: load_pipeline(source),
        lambda: family_named("flux1").load_transformer(source, torch.bfloat16),
        lambda: make_accelerator("no"),
    ):
        torch.backends.cuda.enable_cudnn_sdp(True)
        load()
        assert not torch.backends.cuda.cudnn_sdp_enabled()


def test_tiny_flux_is_the_flux_architecture_and_generates_requested_size() -> None:
    pipe = load_pipeline(tiny_base_dir("flux1", TinyFluxConfig()))
    assert type(pipe).__name__ == "FluxPipeline"
    assert type(pipe.transformer).__name__ == "FluxTransformer2DModel"
    assert pipe.vae.config.latent_channels == 16
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert type(pipe.text_encoder_2).__name__ == "T5EncoderModel"
    for size in (32, 48):
        image = generate(pipe, size)
        assert image.shape == (size, size, 3) and np.isfinite(image).all()


def test_tiny_flux_save_load_round_trip_is_identical(tmp_path) -> None:
    pipe = load_pipeline(tiny_base_dir("flux1", TinyFluxConfig()))
    pipe.save_pretrained(tmp_path / "copy")
    again = load_pipeline(tmp_path / "copy")
    np.testing.assert_array_equal(generate(pipe, 32), generate(again, 32))
    assert not np.array_equal(generate(pipe, 32, seed=0), generate(pipe, 32, seed=1))


def test_tiny_flux_cache_is_keyed_by_config() -> None:
    first = tiny_base_dir("flux1", TinyFluxConfig())
    assert tiny_base_dir("flux1", TinyFluxConfig()) == first
    assert tiny_base_dir("flux1", TinyFluxConfig(seed=1)) != first


def test_locally_trained_tokenizers_encode_class_prompts() -> None:
    pipe = load_pipeline(tiny_base_dir("flux1", TinyFluxConfig()))
    clip_ids = pipe.tokenizer("an aerial image of harbor").input_ids
    t5_ids = pipe.tokenizer_2("an aerial image of harbor").input_ids
    assert clip_ids[0] == pipe.tokenizer.bos_token_id
    assert clip_ids[-1] == pipe.tokenizer.eos_token_id
    assert t5_ids[-1] == pipe.tokenizer_2.eos_token_id
    # trained on aerial captions, so their words are single tokens, not characters
    assert "aerial</w>" in pipe.tokenizer.convert_ids_to_tokens(clip_ids)
    assert pipe.tokenizer.decode(clip_ids, skip_special_tokens=True).strip() == (
        "an aerial image of harbor"
    )


def test_tiny_vit_loads_like_vit_base_in21k() -> None:
    folder = tiny_vit_dir(TinyVitConfig(), 32)
    labels = ["beach", "forest", "harbor"]
    model = ViTForImageClassification.from_pretrained(
        folder,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    processor = AutoImageProcessor.from_pretrained(folder)
    batch = processor(images=[np.zeros((50, 70, 3), dtype=np.uint8)] * 2, return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3)


def test_tokenizers_encode_any_class_name_without_unknowns() -> None:
    """The vocabulary is fixed (not fitted to a dataset): a class name it never saw still
    encodes, in pieces, and decodes back."""
    pipe = load_pipeline(tiny_base_dir("flux1", TinyFluxConfig()))
    prompt = "an aerial image of Quarry-Terraces, wind farm 42"
    clip_ids = pipe.tokenizer(prompt).input_ids
    t5_ids = pipe.tokenizer_2(prompt).input_ids
    assert pipe.tokenizer.unk_token_id not in clip_ids[1:-1]  # CLIP's unk is its end token
    assert pipe.tokenizer_2.unk_token_id not in t5_ids
    clip_text = pipe.tokenizer.decode(clip_ids, skip_special_tokens=True)
    assert clip_text.replace(" ", "") == prompt.lower().replace(" ", "")  # CLIP spaces pieces
    assert pipe.tokenizer_2.decode(t5_ids, skip_special_tokens=True) == prompt


def test_caption_words_splits_folder_names() -> None:
    from synthaug.vocab import caption_words

    assert caption_words("DenseResidential") == "dense residential"
    assert caption_words("storage_tanks") == "storage tanks"
    assert caption_words("RailwayStation") == "railway station"
    assert caption_words("beach") == "beach"


def test_caption_words_splits_compound_names_into_known_words() -> None:
    """UC Merced writes its class names as one word; the prompts use the base's words."""
    from synthaug.vocab import caption_words

    assert caption_words("denseresidential") == "dense residential"
    assert caption_words("mobilehomepark") == "mobile home park"
    assert caption_words("parkinglot") == "parking lot"
    assert caption_words("golfcourse") == "golf course"
    assert caption_words("xyzzy") == "xyzzy"  # nothing spells it: kept as it is
    assert caption_words("Forest") == "forest"


def test_tokenizers_are_the_same_in_every_process() -> None:
    """The base is cached by its settings, so its tokenizers must not depend on the process
    that built them (the `tokenizers` trainers break ties in per-process hash order)."""
    import subprocess
    import sys

    script = (
        "from synthaug.vocab import train_clip_tokenizer, train_t5_tokenizer;"
        "print(train_clip_tokenizer(400).backend_tokenizer.to_str());"
        "print(train_t5_tokenizer(400).backend_tokenizer.to_str())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout) > 1000
