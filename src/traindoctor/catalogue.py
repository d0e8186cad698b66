"""The diagnosis vocabulary: symptom codes and cause ids, as data.

Transcribed from the project catalogue (a public, stable interface like a linter's rule
codes). Codes and ids are never renamed or reused; new ones are appended. The knowledge about
each cause (fixes, what rules it out) is in ``traindoctor.causes``; which symptoms point at which
cause is declared by the rules themselves.
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
    """A cause id and its title. What supports a cause is declared by the rules
    (``traindoctor.rules.symptoms_of``); its fixes and what rules it out live in
    ``traindoctor.causes``, one class per id."""

    id: str
    title: str


FAMILIES = {
    "L": "the loss curve",
    "G": "gradients, weights and updates",
    "A": "activations",
    "V": "training against validation",
    "D": "data",
    "M": "model and loss configuration",
    "R": "the ranks of a distributed run",
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
    Symptom('L012', 'stopped-while-improving', 'the training loss was still falling steeply when the run ended (a large share of the whole drop came in its last fifth) and validation was still improving: more steps of the same would have gone further'),
    Symptom('G001', 'exploding-gradients', 'global or per-layer gradient norm grows by orders of magnitude or exceeds a large bound'),
    Symptom('G002', 'vanishing-gradients', 'gradient norms of early layers are orders of magnitude below later layers, or near zero everywhere while loss is high'),
    Symptom('G003', 'nonfinite-gradients', 'a gradient or weight contains NaN/Inf; name the parameter'),
    Symptom('G004', 'update-ratio-high', '‖update‖/‖weight‖ per step well above ~1e-3 (e.g. > 1e-2): learning is unstable'),
    Symptom('G005', 'update-ratio-low', '‖update‖/‖weight‖ well below ~1e-3 (e.g. < 1e-5): learning is very slow'),
    Symptom('G006', 'no-gradient-flow', 'parameters that should train get no gradient (None or exactly zero): frozen by mistake, detached graph, unused branch'),
    Symptom('G007', 'critical-point', "gradient norm ≈ 0 while loss is still high; the Hessian's extreme eigenvalues tell a saddle point (mixed signs) from a poor local minimum (all positive)"),
    Symptom('G008', 'stale-gradients', 'the gradients are never cleared between optimizer steps (no zero_grad): each step applies the sum of every gradient since the start, so the steps grow with the run'),
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
    Symptom('V008', 'eval-in-train-mode', 'validation computed while dropout or BatchNorm modules were in training mode (no model.eval()): the validation numbers are noisy and biased, and BatchNorm running statistics absorb the validation batches'),
    Symptom('V009', 'regularization-gap', 'the same training batch scores far worse in train mode (dropout and other noise active) than in eval mode, and the train-mode loss stays far from fitting: regularisation, not capacity, keeps the model from learning what it can represent'),
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
    Symptom('M013', 'frozen-at-init', 'parameters frozen (requires_grad=False, or left out of the optimizer) whose values are still a fresh default initialisation: a pretrained checkpoint that did not load, so the model trains its head on random features'),
    Symptom('M014', 'training-crash', 'the script raised an exception during training; the message and the step are recorded, and messages that name a cause (a single-sample batch into BatchNorm, a shape mismatch in the loss) are matched to it'),
    Symptom('R001', 'rank-nonfinite', "the loss or a gradient went NaN/Inf on one rank while the other ranks were finite at the same step: that rank's data or a rank-dependent code path, not the shared weights; report the rank, the step, and when the others followed (DDP's all-reduce spreads one rank's NaN gradients to every rank)"),
    Symptom('R002', 'rank-loss-apart', "one rank's training loss stays orders of magnitude from the other ranks' over a sustained stretch, far beyond the spread between shards of one dataset: that rank trains on different or broken data"),
    Symptom('R003', 'rank-gradients-differ', "under DistributedDataParallel every rank holds the same averaged gradient after the all-reduce, yet the ranks' gradient norms at the same step differ: gradients never all-reduced (no_sync() left on) or changed on some ranks after it, so the model replicas drift apart"),
    Symptom('R004', 'straggler-rank', "one rank waits far longer than the others for its batches from the data loader, sustained over the run: at every synchronisation the other ranks wait for it"),
)}

CAUSES: dict[str, Cause] = {c.id: c for c in (
    Cause('lr-too-high', 'learning rate too high'),
    Cause('lr-too-low', 'learning rate too low'),
    Cause('no-lr-decay', 'LR never decays'),
    Cause('nonfinite-data', 'NaN/Inf in data'),
    Cause('unnormalized-input', 'inputs not standardised'),
    Cause('unnormalized-target', 'regression targets not standardised'),
    Cause('label-domain-error', 'labels do not fit the loss'),
    Cause('label-noise', 'wrong or shuffled labels'),
    Cause('numerically-unstable-loss', 'log of 0 or exp overflow in the loss'),
    Cause('double-softmax', 'softmax applied twice'),
    Cause('bad-initialization', 'init scale wrong'),
    Cause('dying-relu', 'ReLU units died'),
    Cause('saturating-activation', 'sigmoid/tanh saturated'),
    Cause('exploding-gradient', 'gradients blow up through depth/time'),
    Cause('vanishing-gradient', 'gradients die through depth'),
    Cause('insufficient-capacity', 'model too small (model bias)'),
    Cause('optimization-difficulty', 'optimiser cannot find what the model could represent'),
    Cause('overfitting', 'memorising the training set'),
    Cause('over-regularization', 'regularisation too strong'),
    Cause('distribution-mismatch', 'train and validation differ'),
    Cause('data-leakage', 'validation contains training samples'),
    Cause('class-imbalance', 'skewed classes'),
    Cause('unshuffled-data', 'no shuffling'),
    Cause('batch-too-small', 'batch size too small for stable gradients'),
    Cause('undertrained', 'stopped too early'),
    Cause('batchnorm-misuse', 'BN statistics frozen or wrong mode'),
    Cause('precision-overflow', 'reduced precision out of range'),
    Cause('wrong-loss-function', 'loss chosen for another task'),
    Cause('wrong-output-activation', 'last activation does not fit the loss'),
    Cause('missing-nonlinearity', 'no activation between layers'),
    Cause('wrong-optimizer-settings', 'optimiser or its settings unsuited (plain SGD without momentum on a hard problem, Adam epsilon or betas off)'),
    Cause('unbalanced-loss-terms', 'loss terms on different scales'),
    Cause('batch-too-large', 'batch so large that updates are few and generalisation suffers'),
    Cause('code-bug', 'plumbing bug in model, loss or data'),
)}
