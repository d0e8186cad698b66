"""traindoctor inside the training frameworks: one callback each, added to the framework's own list.

- PyTorch Lightning: ``Trainer(callbacks=[traindoctor.integrations.lightning.DoctorCallback()])``
  (``traindoctor.integrations.pytorch_lightning`` for the ``pytorch_lightning`` package);
- Hugging Face: ``Trainer(..., callbacks=[traindoctor.integrations.hf.DoctorCallback()])``;
- Keras 3 on the torch backend: ``model.fit(..., callbacks=[traindoctor.integrations.keras.DoctorCallback()])``.

Each feeds the same :class:`~traindoctor.watch.doctor.Doctor` a training loop would (its monitor, its rules,
its healer, its store), with what the framework knows put into the run's meta (``framework`` and
``framework_args``) so that the fixes are said in the framework's own terms. Nothing here is imported by
``import traindoctor``: each module imports its framework when it is itself imported.
"""
