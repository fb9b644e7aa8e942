"""Generative engines (diffusers), loaded offline and kept between jobs."""
