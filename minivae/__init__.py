"""minivae: variational autoencoders from scratch in NumPy, every gradient by hand."""
