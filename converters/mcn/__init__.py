"""MatConvNet networks by their own names: the description, the numpy reference, a torch module.

``reader`` builds an ``McnNet`` from a loaded file, ``reference`` runs it in numpy with
MatConvNet's semantics (the oracle), ``to_torch`` runs the same graph as an ``nn.Module``,
``compare`` holds the two side by side; ``array_order`` is the one place arrays change
between MATLAB and PyTorch order.
"""
