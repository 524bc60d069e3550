"""synthaug: can LoRA-generated images replace real ones when training an aerial-scene
classifier? (A reproduction of Khrulev's study, and more.)

The study's science, stage by stage, in the order `synthaug run` executes them, each one
notebook and one module:

    stage      notebook            module (its one call)
    data       (every notebook)    data.prepare_data       splits and the image manifest
    lora       01_lora             lora.train_lora         one LoRA for all classes
    generate   02_generate         generate.generate_images  a synthetic set per arm
    classify   03_train_ratio      classify.run_cell       one classifier per cell and seed
    analysis   04_analysis         analysis.page, .figures   one function per table, figure
    book       (all, as pages)     machinery.book.build_book  the Jupyter Book

Beside the stages: `config` (the one validated schema; `paths` lays out a run folder),
`sources` (a dataset's local copy or the hub; the hub models' checks before any work),
`design` (which cells the study fits), `metrics` (one registry of the cells' metrics,
computed from their saved test probabilities), `efficiency` (the sample-efficiency
sweep's reading), `families` (what differs between generator families: FLUX.1, FLUX.2
[klein]), `flow` (prompts and the flow-matching loss), `pretrain` (the base model, and
the tiny base's pretraining), `models` (tiny models of the real architectures),
`timm_backbone` (timm classifiers), `dinov2` (the offline CPU backbone), `attention`,
`checkpoint` (pickle-free LoRA checkpoints), `prodigy`, `vocab` (the tiny text encoders'
tokenizers), `report` (the stage pages' tables and plots), `io` (atomic writes and the
settings guard).

`machinery` runs the science and never the other way round: its services (`provenance`,
`progress`, `quiet`, `compiling`, `tracking`) are called by the stages; its runners
(`study`, `kernels`, `slurm`, `book`, `browser`, `export`, `cards`, `hub`, `cli`) call
the stages (`tests/test_structure.py` holds both to it).
"""

from synthaug.machinery import quiet

quiet.install()
