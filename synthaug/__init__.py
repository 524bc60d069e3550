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

Each stage is declared once, in `machinery.stages.STAGES`.

Beside the stages: `config` (the one validated schema; `paths` lays out a run folder),
`sources` (a dataset's local copy or the hub; the hub models' checks before any work),
`design` (which cells the study fits), `filtering` (the filtered arm: its scorer and
which candidates it keeps), `metrics` (one registry of the cells' metrics, computed from
their saved test probabilities, each declared a number or a table), `families` (what
differs between generator families: FLUX.1, FLUX.2 [klein]), `flow` (prompts and the
flow-matching loss), `pretrain` (the base model, and the tiny base's pretraining),
`models` (tiny models of the real architectures), `timm_backbone` (timm classifiers),
`dinov2` (the offline CPU backbone), `attention`, `checkpoint` (pickle-free LoRA
checkpoints), `prodigy`, `vocab` (the tiny text encoders' tokenizers), `io` (atomic
writes and the settings guard). `analysis` also holds `efficiency` (the sample-efficiency
sweep's reading), `report` and `filter_page` (the stage pages' tables and plots).

Three floors (`tests/test_structure.py` holds them): `runtime` at the bottom, the
services anything may import (`provenance`, `progress`, `quiet`, `compiling`,
`tracking`); the science above it; `machinery` on top, the runners (`stages`,
`study`, `kernels`, `executed`, `slurm`, `book`, `browser`, `export`, `cards`, `hub`,
`ship`, `cli`), which call the stages and which nothing in the science imports.
Importing `synthaug` sets nothing up: the quiet logging is installed where a run starts.
"""
