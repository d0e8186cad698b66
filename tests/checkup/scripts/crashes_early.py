import torch

data = torch.load("/nonexistent/data.pt")
