"""Publishing to the Hugging Face hub: checkpoints with a model card (`iwsft push`, recipe key
push_to_hub) and evaluation results as a dataset repo (`iwsft push-results`)."""
