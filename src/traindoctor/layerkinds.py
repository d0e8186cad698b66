"""The layer and activation families the doctor tells apart, named once and torch-free.

The measuring layer (``inspect/model.py``) turns these names into ``torch.nn`` classes; the causes
read the same names off a run's recorded module types and operations. Two ReLU-like sets exist on
purpose, for two questions: which activations can leave units dead or saturated (measured), and
which take Kaiming's √2 gain at initialisation (judged by the init-scale check).
"""
from __future__ import annotations

# activations whose units can go dead (zero for every input): measured on sampled steps
RELU_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "RReLU", "ELU", "SELU", "CELU")
RELU_OPS = ("relu", "relu6", "leaky_relu", "rrelu", "elu", "selu", "celu", "threshold")
# bounded activations that saturate at their ends
SQUASH_MODULES = ("Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Softsign")
SQUASH_OPS = ("sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign")
# activations that pass about half their input's variance: a weight layer before them wants gain √2
KAIMING_GAIN_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "RReLU", "ELU", "CELU", "GELU", "SiLU", "Mish", "PReLU",
                        "Hardswish")
# layers with a weight matrix or kernel: the ones initialised, measured and counted as depth
WEIGHT_MODULES = ("Linear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                  "ConvTranspose3d")
# lookup tables: a batch's gradient reaches only the rows it used
EMBEDDING_MODULES = ("Embedding", "EmbeddingBag")
