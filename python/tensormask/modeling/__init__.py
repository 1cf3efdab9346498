"""The TensorMask model (paper §4): backbone, FPN, heads (incl. the tensor bipyramid), label
assignment and losses. Knows nothing of files, datasets or training loops."""
