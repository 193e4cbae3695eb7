import torch

torch.set_num_threads(1)  # tiny problems; avoid thread contention on the shared 2-core machine
