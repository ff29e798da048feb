"""What a model is and accepts, as Cog 0.23 defines it.

- `predictors`: a reference → `PredictorSpec` (class, folder, target, environment, concurrency,
  version); `sources` imports predictor files and versions their code; `cogyaml` reads cog.yaml.
- `schema` assembles the OpenAPI document from `types` (annotation → Cog type), `inputs` and
  `outputs`; `reading` reads any such document.
- `validation` checks an input dict against a schema (`coerce` turns one value into its type);
  `arguments` turns validated values into the arguments Cog passes (files, paths, secrets).
- `scope`: `cog.current_scope()` (request context, metrics) for predictors run in process.
"""
