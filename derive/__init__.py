"""derive: the lecture's mathematics as SymPy objects and machine-checked claims.

Imports sympy only.  Modules: zsum (the rule-checked summation layer), proof
(derivations and proofs), claims (the registry), graphs, jacobian,
activations, conv (the lecture's equations 1-22), layer (convolution with
PyTorch semantics), pool (max and average pooling).
"""
