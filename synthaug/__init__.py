"""synthaug: can LoRA-generated images replace real ones when training an aerial-scene
classifier? (A reproduction of Khrulev's study, and more.)

Stages, in the order `synthaug run` executes them, each one notebook and one module:

    stage      notebook            module (its one call)
    data       (every notebook)    data.prepare_data       splits and the image manifest
    lora       01_lora             lora.train_lora         one LoRA for all classes
    generate   02_generate         generate.generate_images  a synthetic set per arm
    classify   03_train_ratio      classify.run_cell       one classifier per cell and seed
    analysis   04_analysis         analysis.analyze        tables, figures, conclusion
    book       (all, as pages)     book.build_book         the Jupyter Book

Beside them: `config` (the one validated schema; `paths` lays out a run folder),
`sources` (a dataset's local copy or the hub; the hub models' checks before any work),
`design` (which cells the study fits), `efficiency` (the sample-efficiency sweep's
reading), `provenance` (the resolved config and package versions of each task),
`families` (what differs between generator families: FLUX.1, FLUX.2 [klein]), `flow`
(prompts and the flow-matching loss), `pretrain` (the base model, and the tiny base's
pretraining), `models` (tiny models of the real architectures), `timm_backbone` (timm
classifiers), `attention`, `checkpoint` (pickle-free LoRA checkpoints), `tracking`
(TensorBoard, wandb), `export`, `cards`, `hub` (sharing the LoRA and the synthetic set),
`metrics`, `report`
(plots), `study` (runs the notebooks with papermill, resumably), `slurm` (the same study
as SLURM job arrays), `kernels` (warm Jupyter kernels), `io` (atomic writes and the
settings guard), `vocab` (the tiny text encoders' tokenizers), `dinov2` (the offline CPU
backbone), `cli`.
"""

from synthaug import quiet

quiet.install()
