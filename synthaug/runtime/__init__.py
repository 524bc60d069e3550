"""Services on the ground floor, imported by anything and importing none of the science:
`provenance` (each task's resolved config and package versions), `progress` (one-line
progress reports), `quiet` (the expected library messages filtered), `compiling`
(torch.compile, regional), `tracking` (TensorBoard, wandb)."""
