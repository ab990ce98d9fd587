"""Knowledge-based dose prediction: a 3D U-Net trained on OpenKBP head-and-neck plans.

- :mod:`planner.predict.metrics` — the OpenKBP challenge's dose score and DVH score (numpy).
- :mod:`planner.predict.data` — network inputs from a patient, the preprocessed training cache,
  augmentation (numpy).
- :mod:`planner.predict.model` — :class:`~planner.predict.model.DoseUNet` (torch).
- :mod:`planner.predict.train` — :func:`~planner.predict.train.train`, resumable (torch).
- :mod:`planner.predict.infer` — :func:`~planner.predict.infer.load_model`,
  :func:`~planner.predict.infer.predict_dose` for any patient (torch).

Nothing is imported here, so that using the numpy parts (e.g. scoring) does not load torch.
"""
