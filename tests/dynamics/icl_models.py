"""A hand-built model in which one head alone carries a two-label ICL task, for the ICL and ablation tests.

Tasks 'yes' and 'no': every demonstration of task 'yes' is labelled ' yes', of task 'no' ' no'; the query's
answer is the task's label. The Llama model (RMSNorm, so normalisation never flips a sign) reserves
residual dimensions:
- 0, the label signal: the ' yes' embedding has +A there, ' no' −A, every other token 0;
- 1, a constant 1 in every embedding (the tie-breaker);
- 2, an answer marker: B in the ' yes' and ' no' embeddings, 0 elsewhere.
No head or MLP writes these dimensions except the carrier head (1, 2), which attends uniformly (zero query
weights), reads dimension 0 into its first value dimension and writes it back to dimension 0 with gain G.
At the last prompt token dimension 0 is therefore G × (average label sign over the prompt): positive for
task 'yes', negative for task 'no', exactly 0 when the head is zeroed.

The unembedding reads only these dimensions: logit(' yes') = n0 + ε·n1, logit(' no') = −n0 + 2ε·n1,
logit(EOS) = C·n2, every other logit 0 (n = the normed residual). So the clean model answers every query
right and then emits EOS; with the carrier zeroed it always answers ' no' (accuracy 1/2 over the two
tasks: chance); ablating any other head changes only the norm, never a sign.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dynamics.adapters import LoadedModel, from_module
from dynamics.tasks.base import IclTask
from dynamics.tasks.builtin import builtin_tasks
from dynamics.toy.tokenizer import train_tokenizer

CARRIER = (1, 2)
N_LAYERS, N_HEADS, D_MODEL = 2, 4, 16
A, B, G, C, EPSILON = 4.0, 2.0, 40.0, 1000.0, 0.01


def words() -> list[str]:
    return [x for x, _ in builtin_tasks()["capitalize"].train[:60]]


def yes_no_tasks() -> dict[str, IclTask]:
    pool = words()
    return {
        label: IclTask(label, tuple((w, label) for w in pool[:40]), tuple((w, label) for w in pool[40:60]))
        for label in ("yes", "no")
    }


def yes_no_tokenizer():
    texts = [f"Q: {w}\nA: {label}\n\n" for w in words() for label in ("yes", "no")]
    return train_tokenizer(texts * 5, vocab_size=400)


def carrier_model(tokenizer, attention_bias: bool = False) -> LoadedModel:
    """The model described in the module docstring (other weights random, seeded)."""
    yes, no = (tokenizer(f" {w}", add_special_tokens=False)["input_ids"] for w in ("yes", "no"))
    assert len(yes) == len(no) == 1, "' yes' and ' no' must be single tokens"
    yes, no = yes[0], no[0]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS, intermediate_size=32, max_position_embeddings=512, tie_word_embeddings=False,
        attention_bias=attention_bias, initializer_range=0.2, attn_implementation="sdpa",
    ))
    d_head = D_MODEL // N_HEADS
    layer, head = CARRIER
    columns = slice(head * d_head, (head + 1) * d_head)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight  # (vocab, d_model)
        embed[:, :3] = 0
        embed[yes, 0], embed[no, 0] = A, -A
        embed[:, 1] = 1
        embed[yes, 2] = embed[no, 2] = B
        for block in model.model.layers:  # nothing else writes the reserved dimensions
            if attention_bias:  # transformers initialises biases to zero
                for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    getattr(block.self_attn, projection).bias.normal_(0, 0.5)
                block.self_attn.o_proj.bias[:3] = 0
            block.self_attn.o_proj.weight[:3] = 0
            block.mlp.down_proj.weight[:3] = 0
        attention = model.model.layers[layer].self_attn
        attention.q_proj.weight[columns] = 0  # uniform attention over the prefix
        attention.v_proj.weight[columns] = 0
        attention.v_proj.weight[columns.start, 0] = 1  # value dimension 0 ← normed residual dimension 0
        attention.o_proj.weight[:, columns] = 0
        attention.o_proj.weight[0, columns.start] = G  # residual dimension 0 ← value dimension 0
        if attention_bias:
            attention.q_proj.bias[columns] = 0
            attention.v_proj.bias[columns] = 0
        unembed = model.lm_head.weight  # (vocab, d_model)
        unembed.zero_()
        unembed[yes, 0], unembed[yes, 1] = 1, EPSILON
        unembed[no, 0], unembed[no, 1] = -1, 2 * EPSILON
        unembed[tokenizer.eos_token_id, 2] = C
    return from_module(model)
