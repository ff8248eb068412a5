"""Making images with a trained result: the one generation helper, and the logic behind the Cog predictor and trainer."""
