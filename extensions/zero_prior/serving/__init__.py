"""Making images with a trained result: the one generation helper, and the logic behind Cog's predictor and trainer."""
