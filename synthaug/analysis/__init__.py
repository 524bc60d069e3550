"""Stage 4: the study's tables, figures and answer, from the cells' saved results.

- `tables`: the paper's Tables 1 and 2 beside this study's, baselines, arms, curves,
  per-class accuracy, variance; `intervals`: how intervals are written and compared.
- `quality`: the synthetic set in the backbone's features (CAS, Fréchet distance, PRDC),
  the ceilings CAS is measured against, the memorisation check.
- `paper_mse`: what the paper's undefined "mse" can be.
- `answer`: the answer, the conclusion and the notes, in words.
- `context.Study`: one study's parts, each computed on first use, once; `page` and
  `figures`: each table and figure of notebook 04 as one function of it.

Import what you need from its module, e.g. `from synthaug.analysis.tables import table2`.
"""
