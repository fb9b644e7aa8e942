"""Real-ESRGAN in plain PyTorch: the two architectures, weight loading and a tiled upscaler."""
