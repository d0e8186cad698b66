"""The diagnosis vocabulary: symptom codes and cause ids, as data.

Transcribed from the project catalogue (a public, stable interface like a linter's rule
codes). Codes and ids are never renamed or reused; new ones are appended.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Symptom:
    code: str
    name: str
    evidence: str

    @property
    def family(self) -> str:
        return self.code[0]


@dataclass(frozen=True)
class Cause:
    id: str
    title: str
    symptoms: tuple[str, ...]
    fixes: tuple[str, ...]


FAMILIES = {
    "L": "the loss curve",
    "G": "gradients, weights and updates",
    "A": "activations",
    "V": "training against validation",
    "D": "data",
    "M": "model and loss configuration",
}

SYMPTOMS: dict[str, Symptom] = {s.code: s for s in (
    Symptom('L001', 'nonfinite-loss', 'loss is NaN or ±Inf at some step; report the first step, and, when live, the first module whose output or gradient went non-finite and the batch (sample ids) that was being processed'),
    Symptom('L002', 'divergence', 'loss trends upward over a window, or grows by orders of magnitude, usually heading to Inf/NaN'),
    Symptom('L003', 'loss-spike', 'a sudden jump far above the recent running level mid-training (it may recover); often one bad batch or an LR that is too high without decay'),
    Symptom('L004', 'oscillation', 'from the start the loss swings widely with no downward trend'),
    Symptom('L005', 'no-progress', 'loss flat from the start: the network is not learning at all'),
    Symptom('L006', 'stalled', 'loss fell, then stopped improving well before a good level; classic signal to decay the LR'),
    Symptom('L007', 'stuck-at-chance', 'loss pinned at the value of a constant prediction: ln(C) for C-class cross-entropy (ln 2 = 0.6931 for binary), or the label-prior entropy; the model outputs the prior for every input'),
    Symptom('L008', 'saturated-loss', 'loss pinned at a clamp value: 87.3365 = −ln(FLT_MIN) (probability underflowed to the float32 minimum), 103.28 (subnormal minimum), 100 (PyTorch BCELoss clamps log at −100), or the same for fp16 (9.70); logits have blown up and softmax/sigmoid saturated'),
    Symptom('L009', 'bad-initial-loss', 'first-step loss far from what a freshly initialised model should give (≈ ln(C) for C-class cross-entropy, ≈ target variance for MSE on standardised targets)'),
    Symptom('L010', 'accuracy-jump-pending', 'accuracy flat (often 0 or chance) while loss still falls: do not stop yet, accuracy can jump late'),
    Symptom('L011', 'unbalanced-loss-terms', 'a loss summed from several terms (multi-task, auxiliary, regularisation) where one term is orders of magnitude larger than the others and drowns them'),
    Symptom('G001', 'exploding-gradients', 'global or per-layer gradient norm grows by orders of magnitude or exceeds a large bound'),
    Symptom('G002', 'vanishing-gradients', 'gradient norms of early layers are orders of magnitude below later layers, or near zero everywhere while loss is high'),
    Symptom('G003', 'nonfinite-gradients', 'a gradient or weight contains NaN/Inf; name the parameter'),
    Symptom('G004', 'update-ratio-high', '‖update‖/‖weight‖ per step well above ~1e-3 (e.g. > 1e-2): learning is unstable'),
    Symptom('G005', 'update-ratio-low', '‖update‖/‖weight‖ well below ~1e-3 (e.g. < 1e-5): learning is very slow'),
    Symptom('G006', 'no-gradient-flow', 'parameters that should train get no gradient (None or exactly zero): frozen by mistake, detached graph, unused branch'),
    Symptom('G007', 'critical-point', "gradient norm ≈ 0 while loss is still high; the Hessian's extreme eigenvalues tell a saddle point (mixed signs) from a poor local minimum (all positive)"),
    Symptom('A001', 'dead-relu', 'a large fraction of ReLU units output zero for every input in a window'),
    Symptom('A002', 'saturated-activations', 'sigmoid/tanh units sit in their flat tails for most inputs'),
    Symptom('A003', 'exploding-activations', 'activations or logits grow to huge magnitudes (the prelude of overflow in exp/softmax)'),
    Symptom('A004', 'nonfinite-activation', "a module's output contains NaN/Inf; name the first module in forward order"),
    Symptom('V001', 'overfitting', 'train loss keeps falling while validation loss has passed its minimum and rises, or the gap widens steadily; report the best epoch'),
    Symptom('V002', 'underfitting', 'train and validation losses both high and flat: capacity or optimisation problem'),
    Symptom('V003', 'train-flat-val-falls', 'train loss flat while validation loss falls: almost always a data problem'),
    Symptom('V004', 'both-rising', 'train and validation losses both rise: architecture, hyperparameters or dirty data'),
    Symptom('V005', 'distribution-mismatch', 'validation far worse than training from the start and the gap does not close as training improves; training and validation data differ'),
    Symptom('V006', 'unconfident-predictions', 'predicted class probabilities cluster near uniform (near 0.5 for binary): the classifier has not separated the classes yet'),
    Symptom('V007', 'eval-mode-gap', 'loss in eval mode far above loss in train mode on the same data: BatchNorm running statistics or dropout misused'),
    Symptom('D001', 'nonfinite-inputs', 'NaN/Inf in inputs or targets; name sample ids'),
    Symptom('D002', 'unnormalized-inputs', 'input features far from zero mean / unit scale (e.g. raw pixels in [0, 255])'),
    Symptom('D003', 'unnormalized-targets', 'regression targets on a large scale (e.g. ~10 000)'),
    Symptom('D004', 'labels-out-of-domain', 'class index ≥ number of outputs or negative, BCE targets outside [0, 1], labels of the wrong dtype/shape for the loss'),
    Symptom('D005', 'class-imbalance', 'class frequencies differ strongly (report the ratio)'),
    Symptom('D006', 'train-val-leakage', 'identical samples in training and validation sets'),
    Symptom('D007', 'unshuffled-data', 'batches arrive ordered by label (long runs of one class)'),
    Symptom('D008', 'suspect-labels', 'samples whose loss stays far above the rest; candidates for wrong labels'),
    Symptom('M001', 'double-softmax', "the model's last layer applies softmax (or log-softmax) and the loss applies it again (e.g. `nn.Softmax` into `nn.CrossEntropyLoss`)"),
    Symptom('M002', 'unstable-loss-formula', 'probabilities fed to a log without a fused, stable form (sigmoid into `BCELoss`, `log(softmax(x))`)'),
    Symptom('M003', 'bad-init-scale', 'initial weights of a layer far off the variance-preserving (Xavier/Kaiming) scale, so activations blow up or shrink with depth'),
    Symptom('M004', 'cannot-overfit-tiny-batch', 'the model cannot drive the loss near zero on a handful of samples: a bug in model, loss or data plumbing, or far too little capacity'),
    Symptom('M005', 'optimization-failure', 'a deeper model reaches a higher training loss than a shallower one: optimisation, not capacity, is the problem'),
    Symptom('M006', 'gradient-check-failure', "a custom autograd function's analytic gradient disagrees with finite differences"),
    Symptom('M007', 'reduced-precision-overflow', "fp16/bf16 overflow or a loss summed over a big batch exceeding the dtype's range"),
    Symptom('M008', 'loss-task-mismatch', 'the loss does not fit the task or the labels: mean-squared error on class indices, binary cross-entropy on a multi-class target, cross-entropy on a continuous target'),
    Symptom('M009', 'output-activation-mismatch', "the last layer's activation does not fit the loss: ReLU or sigmoid on logits fed to cross-entropy, raw outputs fed to a loss that expects probabilities, softmax where labels are multi-label, ReLU on a regression output whose targets go negative"),
    Symptom('M010', 'missing-nonlinearity', 'stacked linear (or convolution) layers with no activation between them: the network collapses to one linear map'),
    Symptom('M011', 'input-ignored', 'after the same short training the model does as well with its inputs zeroed as with the real ones: its output does not depend on the input (input overwritten, detached or never fed), or the labels do not depend on it'),
    Symptom('M012', 'lr-outside-working-range', "the optimizer's learning rate lies outside the range where an LR range test made the loss fall: at or above the LR where the loss diverged, or orders of magnitude below the steepest-descent LR"),
)}

CAUSES: dict[str, Cause] = {c.id: c for c in (
    Cause('lr-too-high', 'learning rate too high', ('L001', 'L002', 'L003', 'L004', 'G001', 'G004', 'A001', 'L008', 'M012'), ('lower LR ×0.1 (search on a log scale: 0.1, 0.01, 0.001, …)', 'add warm-up', 'clip gradient norm (5, 10 or 15 for RNNs)', 'run an LR range test')),
    Cause('lr-too-low', 'learning rate too low', ('L005', 'G005', 'M012'), ('raise LR ×10', 'LR range test')),
    Cause('no-lr-decay', 'LR never decays', ('L006', 'L003'), ('decay ×0.5 (or ÷2 to ÷5) when validation stops improving', 'cosine/step schedule')),
    Cause('nonfinite-data', 'NaN/Inf in data', ('D001', 'L001'), ('drop or repair the listed samples', 'validate data at load time')),
    Cause('unnormalized-input', 'inputs not standardised', ('D002', 'L001', 'L004', 'A003'), ('subtract mean, divide by std per feature (pixels to [−1, 1] or standardised)',)),
    Cause('unnormalized-target', 'regression targets not standardised', ('D003', 'L001', 'L002'), ('standardise targets, invert at prediction time',)),
    Cause('label-domain-error', 'labels do not fit the loss', ('D004', 'L001'), ('fix label encoding or the loss/output size pairing',)),
    Cause('label-noise', 'wrong or shuffled labels', ('D008', 'L005', 'V003', 'M011'), ('audit the listed samples', 'check data/label alignment in the loader')),
    Cause('numerically-unstable-loss', 'log of 0 or exp overflow in the loss', ('M002', 'L001', 'L008'), ('use fused forms (`CrossEntropyLoss` on logits, `BCEWithLogitsLoss`, `log_softmax`)', 'add eps inside logs')),
    Cause('double-softmax', 'softmax applied twice', ('M001', 'L005', 'L007'), ('return logits from the model',)),
    Cause('bad-initialization', 'init scale wrong', ('M003', 'L009', 'G001', 'G002', 'A002'), ('Xavier for tanh/sigmoid, Kaiming for ReLU, zero biases',)),
    Cause('dying-relu', 'ReLU units died', ('A001', 'L005', 'L006'), ('lower LR', 'LeakyReLU/GELU', 'Kaiming init', 'normalisation')),
    Cause('saturating-activation', 'sigmoid/tanh saturated', ('A002', 'G002'), ('ReLU family in hidden layers', 'normalisation', 'smaller init')),
    Cause('exploding-gradient', 'gradients blow up through depth/time', ('G001', 'L001', 'L002'), ('clip gradient norm', 'lower LR', 'normalisation', 'residual connections', 'smaller init')),
    Cause('vanishing-gradient', 'gradients die through depth', ('G002', 'L005'), ('ReLU family', 'residual connections', 'normalisation', 'Kaiming init')),
    Cause('insufficient-capacity', 'model too small (model bias)', ('V002', 'M004'), ('wider/deeper model', 'check M005 first')),
    Cause('optimization-difficulty', 'optimiser cannot find what the model could represent', ('M005', 'G007', 'L006'), ('Adam with defaults', 'momentum', 'normalisation', 'residuals', 'LR schedule with warm-up')),
    Cause('overfitting', 'memorising the training set', ('V001',), ('more data or augmentation', 'dropout (0.5, 0.2 for small models)', 'weight decay', 'early stopping with best-checkpoint restore', 'smaller model')),
    Cause('over-regularization', 'regularisation too strong', ('V002', 'L006'), ('lower weight decay and dropout, raise them again only once overfitting shows',)),
    Cause('distribution-mismatch', 'train and validation differ', ('V005',), ('re-split data', 'check preprocessing is identical on both')),
    Cause('data-leakage', 'validation contains training samples', ('D006',), ('deduplicate across splits',)),
    Cause('class-imbalance', 'skewed classes', ('D005', 'L007'), ('reweighting or oversampling the rare classes', 'class-balanced batches', 'focal loss')),
    Cause('unshuffled-data', 'no shuffling', ('D007', 'L003', 'L004'), ('shuffle every epoch',)),
    Cause('batch-too-small', 'batch size too small for stable gradients', ('L004',), ('larger batch (powers of two), or lower LR',)),
    Cause('undertrained', 'stopped too early', ('V006', 'L010'), ('train longer', 'judge by loss, not accuracy')),
    Cause('batchnorm-misuse', 'BN statistics frozen or wrong mode', ('V007',), ('keep BN statistics updating when fine-tuning on new data', 'call `model.train()`/`model.eval()` correctly')),
    Cause('precision-overflow', 'reduced precision out of range', ('M007', 'L001'), ('loss scaling', 'fp32 accumulation for losses and reductions')),
    Cause('wrong-loss-function', 'loss chosen for another task', ('M008', 'L005', 'L007'), ('cross-entropy on logits for single-label classes, BCE-with-logits for binary or multi-label, MSE/Huber for regression',)),
    Cause('wrong-output-activation', 'last activation does not fit the loss', ('M009', 'M001', 'L005', 'L007'), ('logits (no activation) into the fused losses', 'none or identity for regression')),
    Cause('missing-nonlinearity', 'no activation between layers', ('M010', 'V002'), ('put ReLU/GELU between the layers',)),
    Cause('wrong-optimizer-settings', 'optimiser or its settings unsuited (plain SGD without momentum on a hard problem, Adam epsilon or betas off)', ('L006', 'L005', 'G005'), ('Adam with defaults, or SGD with momentum 0.9',)),
    Cause('unbalanced-loss-terms', 'loss terms on different scales', ('L011',), ('weight the terms so they sit within one order of magnitude', "begin with the main task's term, add the others once it trains")),
    Cause('batch-too-large', 'batch so large that updates are few and generalisation suffers', ('V001', 'L006'), ('smaller batch, or scale the LR with it',)),
    Cause('code-bug', 'plumbing bug in model, loss or data', ('M004', 'M006', 'V004', 'M011'), ("the doctor's probes narrow it down: overfit one batch, repeat one sample, gradient check, compare with a shallow model",)),
)}
