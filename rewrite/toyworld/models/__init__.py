"""Models trained on the toy world: its StyleGAN2 generator, the segmenter, their training and checks."""
