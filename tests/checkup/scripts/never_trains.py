import torch

print("just a tensor:", torch.ones(2).sum().item())
