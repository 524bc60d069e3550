"""The machinery that runs the study, apart from the study's science.

Services the stages call (they know nothing of the stages): `provenance` (each task's
resolved config and package versions), `progress` (one-line progress reports), `quiet`
(known-harmless warnings silenced), `compiling` (torch.compile, regional), `tracking`
(TensorBoard, wandb).

Runners over the stages (the stages never import them): `study` (runs the notebooks with
papermill, resumably), `kernels` (warm Jupyter kernels), `slurm` (the same study as SLURM
job arrays), `book` and `browser` (the Jupyter Book, checked in headless Chromium),
`export`, `cards` and `hub` (sharing the LoRA and the synthetic set), `ship` (the
shipped base and its card), `lock` (one writer per run folder), `cli`.
"""
