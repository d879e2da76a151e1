"""Tiny random causal LMs for tests and the ``--tiny`` closed loop: no hub, no download.

The tokenizer is a byte-level BPE trained in memory on a small corpus, with SmolLM2-style
chat markers, so chat templates, EOS handling and padding behave as with the demo model.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Answer the question briefly and give one reason.",
    "Python is a programming language. Django is a web framework.",
    "A preference pair has a chosen and a rejected response.",
    "Short answers are often better than long answers because they are clear.",
    "What is the capital of France? Paris is the capital of France.",
    "Explain why the sky is blue in one sentence.",
    "Write a haiku about autumn leaves falling on a quiet river.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000, yes no maybe.",
    "user assistant system hello thanks please sorry because so therefore.",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """Train a byte-level BPE tokenizer in memory and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    vocab_size: int = 512,
    num_labels: int | None = None,
):
    """Build a tiny Llama (random weights). Saved to ``path`` (an HF folder) when given.

    ``num_labels`` builds a sequence-classification head instead (reward/value models).
    Returns ``(model, tokenizer)``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = build_tiny_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if num_labels is not None:
        config.num_labels = num_labels
        model = LlamaForSequenceClassification(config)
    else:
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if path is not None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return model, tokenizer
