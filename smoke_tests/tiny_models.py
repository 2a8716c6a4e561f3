"""Tiny random-weight models for the `engine` and `server` smoke levels, written at test time.

No hub and no network: the configs come from `transformers`' config classes, the weights are seeded random
tensors saved with `safetensors`, and the tokenizer is a word-level one built with `tokenizers`.

Both models are big enough to exercise vLLM's real code paths (attention with head_dim 64, a fused MoE layer)
and small enough to load and generate in well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

# Words the prompts and the chat template use; the rest of the vocabulary is filler, so random weights have
# something to pick from. Each word is one token ("▁" marks a word start, as in SentencePiece vocabularies).
WORDS = (
    "the a an of to and in is it that for on with as was he she they we you i this be are at by from "
    "hello world what name your my how today tell me about cat dog sky blue red green one two three "
    "user assistant system : . analysis final commentary"
).split()
# The first four are ids 0-3 (see _token_ids); the rest are the harmony tokens that vLLM's gpt-oss reasoning
# parser looks up when it loads a gpt-oss model (a KeyError without them).
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>",
                  "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"]
VOCAB_SIZE = 256
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"

# A minimal chat template, so /v1/chat/completions works. Roles and content are plain words of the vocabulary.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)

# Larger than transformers' default (0.02) on purpose: with 0.02 the attention and MLP outputs are tiny
# next to the embeddings, so a wrong attention kernel would hardly move the logits. At 0.2 each block
# matters and the greedy choices have clear margins, so two correct backends agree and a broken one shows.
INIT_STD = 0.2
SEED = 1234


def write_tokenizer(model_dir: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json (with a chat template) for a word-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    pieces = SPECIAL_TOKENS + ["▁" + word for word in WORDS]
    pieces += [f"▁w{i}" for i in range(VOCAB_SIZE - len(pieces))]
    assert len(set(pieces)) == len(pieces), "duplicate word in WORDS"
    vocab = {piece: index for index, piece in enumerate(pieces)}

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    # Prepend <s> to a plain encode, as Llama tokenizers do (the chat template writes its own <s>).
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.save(str(model_dir / "tokenizer.json"))

    # Written by hand rather than by PreTrainedTokenizerFast.save_pretrained: newer transformers put the chat
    # template in a separate chat_template.jinja, and the server needs it in tokenizer_config.json here.
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "add_bos_token": True,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (model_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[PAD]})
    )


def _token_ids() -> dict:
    return {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3, "vocab_size": VOCAB_SIZE}


def _save(model_dir: Path, config, tensors: dict) -> Path:
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(model_dir)
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(model_dir)
    return model_dir


def _random_bf16_state_dict(model_class, config) -> dict:
    """Seeded random weights with the exact names and shapes of the transformers model class."""
    import torch

    torch.manual_seed(SEED)
    model = model_class(config)  # init with config.initializer_range (INIT_STD), norms at 1
    return {name: tensor.detach().to(torch.bfloat16) for name, tensor in model.state_dict().items()}


def write_dense_model(model_dir: Path) -> Path:
    """A 2-layer Llama: hidden 128, 2 heads of 64 (vLLM's CPU attention rejects head_dim 16), ~0.5 M weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **_token_ids(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    config.architectures = ["LlamaForCausalLM"]
    return _save(model_dir, config, _random_bf16_state_dict(LlamaForCausalLM, config))


# The MoE model is gpt-oss shaped (GptOssForCausalLM: 4 experts, top-2, attention sinks, biased experts with
# the swiglu-oai activation), because gpt-oss is the model family whose vLLM MoE path uses triton_kernels:
# in vLLM 0.19.0 only the MXFP4 MoE method (oracle/mxfp4.py) picks the triton_kernels experts
# (gpt_oss_triton_kernels_moe.py), on compute capability 9.x/10.x when triton_kernels imports.
# Unquantized MoE layers use vLLM's own fused_moe Triton kernel on a GPU and the CPU fused MoE on a CPU.
# So: `mxfp4=True` (on a Hopper GPU) writes the experts in gpt-oss's MXFP4 checkpoint format, which makes
# vLLM choose triton_kernels when present; `mxfp4=False` (the CPU) writes them in bf16, a standard fused MoE.
MOE_LAYERS = 2
MOE_EXPERTS = 4
MOE_HIDDEN = 128
MOE_INTERMEDIATE = 128
MXFP4_BLOCK = 32  # values per shared scale (OCP MX block size)


def write_moe_model(model_dir: Path, *, mxfp4: bool = False) -> Path:
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        **_token_ids(),
        hidden_size=MOE_HIDDEN,
        intermediate_size=MOE_INTERMEDIATE,
        num_hidden_layers=MOE_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        num_local_experts=MOE_EXPERTS,
        num_experts_per_tok=2,
        sliding_window=128,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=512,
        # gpt-oss's YaRN rope, scaled down so that original length * factor = max_position_embeddings.
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                      "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False},
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    config.architectures = ["GptOssForCausalLM"]
    tensors = _random_bf16_state_dict(GptOssForCausalLM, config)
    if mxfp4:
        tensors = _experts_to_random_mxfp4(tensors)
        config.quantization_config = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
        }
    return _save(model_dir, config, tensors)


def _experts_to_random_mxfp4(tensors: dict) -> dict:
    """Replace the bf16 expert matrices by random MXFP4 ones in gpt-oss's checkpoint layout.

    gpt-oss stores, per layer, `<proj>_blocks` (uint8, two FP4 e2m1 values a byte, 32 values a block) and
    `<proj>_scales` (uint8 e8m0 exponents, one a block): gate_up (E, 2*I, H/32, 16) and down (E, H, I/32, 16).
    The biases stay bf16. Values are random: this is a smoke model, not a quantized copy of the bf16 one.
    """
    import torch

    generator = torch.Generator().manual_seed(SEED)
    shapes = {
        "gate_up_proj": (MOE_EXPERTS, 2 * MOE_INTERMEDIATE, MOE_HIDDEN // MXFP4_BLOCK),
        "down_proj": (MOE_EXPERTS, MOE_HIDDEN, MOE_INTERMEDIATE // MXFP4_BLOCK),
    }
    out = {}
    for name, tensor in tensors.items():
        proj = name.rsplit(".", 1)[-1]
        if ".mlp.experts." not in name or proj not in shapes:
            out[name] = tensor
            continue
        shape = shapes[proj]
        out[f"{name}_blocks"] = torch.randint(0, 256, (*shape, MXFP4_BLOCK // 2), dtype=torch.uint8,
                                              generator=generator)
        # e8m0 exponent 127 - 3 = a scale of 1/8, so the FP4 values (|x| <= 6) land near INIT_STD's range.
        out[f"{name}_scales"] = torch.full(shape, 127 - 3, dtype=torch.uint8)
    return out
