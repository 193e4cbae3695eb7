import torch

torch.set_num_threads(1)  # small problems; avoid thread contention on the shared 2-core machine
