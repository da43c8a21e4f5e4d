"""The FastAP loss: ``FastAPLoss`` (fast, PyTorch) and ``fastap_matlab`` (``FastAP.m`` by stage)."""
