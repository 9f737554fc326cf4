"""Test helpers: randomly initialised models with the embedded tokenizer's vocabulary."""


def tiny_random_model(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                      intermediate: int | None = None, seed: int = 0, max_positions: int = 2048,
                      tie_word_embeddings: bool = True):
    """A randomly initialised Llama with the tokenizer's vocabulary: fast stand-in for training tests.

    Deterministic for a given seed and does not disturb the global torch RNG.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
        pad_token_id=pad, tie_word_embeddings=tie_word_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.to(torch.float32)
    model.eval()
    return model


def save_tiny_model_folder(folder, tokenizer, **kw):
    """A tiny random model and the tokenizer saved as a Hugging Face folder (`iwsft eval --model FOLDER`)."""
    model = tiny_random_model(tokenizer, **kw)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
