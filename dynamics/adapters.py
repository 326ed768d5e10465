"""Model adapters: load a checkpoint into a module and name its per-head hook points.

Scorers never name a model family. They ask a `LoadedModel` for:
- `o_proj(layer)`: the attention output projection whose *input* holds the per-head outputs z,
  laid out head-major (head 0's d_head values first), as Todd et al. and Yin & Steinhardt hook it;
- `capture_attention(reduce)`: attention probabilities per layer, handed to `reduce` as soon as a
  layer produces them (eager attention only for that pass), so no full activation cache is held;
- `blocks`, `logits_from_residual`, `position_embeddings`: the pieces the fast FV path needs
  to rerun a single token from a given block on.

The per-family differences are a table (`FAMILIES`), not branching code.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from dynamics.errors import InputError, MissingInputError, first_line


@contextlib.contextmanager
def hooks(handles: Iterable[RemovableHandle]) -> Iterator[None]:
    """Keep the given hooks registered for the body, and remove them however it ends.

    Example: `with hooks([model.o_proj(3).register_forward_pre_hook(fn)]): model.model(ids)`
    """
    handles = list(handles)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Family:
    """Where a transformers architecture keeps the modules the scorers need (dotted paths)."""

    name: str
    blocks: str  # ModuleList of decoder blocks
    attention: str  # attention module inside a block
    o_proj: str  # output projection inside the attention module
    final_norm: str
    rotary: str | None  # module computing (cos, sin) from position ids, if the family uses rotary
    position_embedding: str | None  # learned absolute positions (GPT-2)
    o_proj_is_conv1d: bool = False  # GPT-2's Conv1D stores the weight as (in, out)


FAMILIES: dict[str, Family] = {
    "gpt_neox": Family(
        name="gpt_neox",
        blocks="gpt_neox.layers",
        attention="attention",
        o_proj="dense",
        final_norm="gpt_neox.final_layer_norm",
        rotary="gpt_neox.rotary_emb",
        position_embedding=None,
    ),
    "gpt2": Family(
        name="gpt2",
        blocks="transformer.h",
        attention="attn",
        o_proj="c_proj",
        final_norm="transformer.ln_f",
        rotary=None,
        position_embedding="transformer.wpe",
        o_proj_is_conv1d=True,
    ),
    # Llama and the families that keep its module names (checked in transformers 5.24's modeling_olmo.py,
    # modeling_olmo2.py, modeling_qwen2.py, modeling_mistral.py: model.layers[i].self_attn.o_proj, model.norm,
    # model.rotary_emb(hidden, position_ids), attention kwargs passed through to the attention function).
    # What differs stays inside their attention modules, which the scorers never reimplement: OLMo's
    # clip_qkv, OLMo 2's q_norm/k_norm and post-norms, Qwen2's q/k/v biases, Mistral's sliding window
    # (`LoadedModel.n_ctx` keeps every sequence inside it). Not OLMo 3: its rotary module takes a layer type.
    **{
        model_type: Family(
            name=model_type,
            blocks="model.layers",
            attention="self_attn",
            o_proj="o_proj",
            final_norm="model.norm",
            rotary="model.rotary_emb",
            position_embedding=None,
        )
        for model_type in ("llama", "olmo", "olmo2", "qwen2", "mistral")
    },
}


# OlmoLayerNorm has no parameters and no eps attribute: its forward hard-codes 1e-5 (transformers 5.24,
# models/olmo/modeling_olmo.py).
OLMO_LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class NormRule:
    """What a norm module computes: γ ⊙ P(x) / sqrt(mean(P(x)²) + eps), plus a bias; P subtracts the mean
    (LayerNorm) or is the identity (RMSNorm)."""

    centres: bool
    eps: float
    weight: Tensor | None  # γ; None for a norm without a gain (OLMo's)


def norm_rule(norm: nn.Module) -> NormRule:
    """The `NormRule` of the families' norm modules: LayerNorm (GPT-2, GPT-NeoX), RMSNorm (Llama, OLMo 2,
    Qwen2, Mistral), OLMo's LayerNorm without affine parameters."""
    if isinstance(norm, nn.LayerNorm):
        return NormRule(True, norm.eps, norm.weight)
    if hasattr(norm, "variance_epsilon"):
        return NormRule(False, norm.variance_epsilon, norm.weight)
    if hasattr(norm, "normalized_shape") and next(norm.parameters(), None) is None:
        return NormRule(True, OLMO_LAYER_NORM_EPS, None)
    raise InputError(f"norm module {type(norm).__name__} is neither a LayerNorm nor an RMSNorm that "
                     "dynamics.adapters.norm_rule knows")


def family_of(model: nn.Module) -> Family:
    model_type = model.config.model_type
    if model_type not in FAMILIES:
        raise InputError(_no_adapter(model_type))
    return FAMILIES[model_type]


def check_architecture(config_path: Path, model_id: str) -> str:
    """The model type a checkpoint's config.json names; a one-line InputError when no adapter knows it.

    Read before any weights are fetched, so an unsupported model fails in seconds, not after a download.
    """
    try:
        model_type = json.loads(Path(config_path).read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise InputError(f"{config_path} of {model_id} is not a valid config.json ({err}); fetch or save it again") from err
    if model_type not in FAMILIES:
        raise InputError(f"{model_id}: {_no_adapter(model_type)} (from {config_path.name})")
    return model_type


def context_length(config) -> int:
    """The longest sequence the scorers feed a model with this transformers config: the position limit, or the
    sliding attention window when the model has one (the fast FV path attends to the whole prefix, which is
    exact only inside it). Known from config.json alone, so a sweep checks prompt lengths before loading weights."""
    positions = int(getattr(config, "max_position_embeddings", None) or config.n_positions)
    window = getattr(config, "sliding_window", None)
    return min(positions, int(window)) if window else positions


def _no_adapter(model_type: str | None) -> str:
    return f"model type {model_type!r} has no adapter; supported: {', '.join(sorted(FAMILIES))}"


@dataclass
class LoadedModel:
    """A causal LM plus the facts and hook points the scorers use."""

    model: nn.Module
    family: Family
    dtype: torch.dtype
    attn_implementation: str  # what the model runs with outside the induction pass

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def d_head(self) -> int:
        # Mistral, Qwen2 and Llama configs may set head_dim apart from d_model / n_heads
        return getattr(self.config, "head_dim", None) or self.d_model // self.n_heads

    @property
    def n_ctx(self) -> int:
        """The longest sequence the scorers feed (`context_length` of the model's config)."""
        return context_length(self.config)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.family.blocks)

    def attention(self, layer: int) -> nn.Module:
        return self.blocks[layer].get_submodule(self.family.attention)

    def o_proj(self, layer: int) -> nn.Module:
        return self.attention(layer).get_submodule(self.family.o_proj)

    def o_proj_weight(self, layer: int) -> Tensor:
        """W_O as (d_model, n_heads * d_head): column block h is head h's write matrix."""
        weight = self.o_proj(layer).weight
        return weight.T if self.family.o_proj_is_conv1d else weight

    def head_slice(self, head: int) -> slice:
        return slice(head * self.d_head, (head + 1) * self.d_head)

    def position_embeddings(self, hidden: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor] | None:
        """(cos, sin) for rotary families, None otherwise."""
        if self.family.rotary is None:
            return None
        return self.model.get_submodule(self.family.rotary)(hidden, position_ids)

    def logits_from_residual(self, hidden: Tensor) -> Tensor:
        hidden = self.model.get_submodule(self.family.final_norm)(hidden)
        return self.model.get_output_embeddings()(hidden)

    def run_block(
        self,
        layer: int,
        hidden: Tensor,
        position_ids: Tensor,
        position_embeddings: tuple[Tensor, Tensor] | None,
        **attention_kwargs,
    ) -> Tensor:
        """Residual leaving block `layer`, run on its own without a causal mask or KV cache.

        `attention_kwargs` reach the attention function (`ALL_ATTENTION_FUNCTIONS`) unchanged in all
        three families, which is how a custom attention implementation gets its extra inputs.
        """
        extra = {} if position_embeddings is None else {"position_embeddings": position_embeddings}
        return self.blocks[layer](hidden, attention_mask=None, position_ids=position_ids, **extra, **attention_kwargs)

    @contextlib.contextmanager
    def temporary_dtype(self, dtype: torch.dtype) -> Iterator[None]:
        """Run the body with the weights cast to `dtype`, then cast back.

        Casting up and back (fp16/bf16 → fp32 → fp16/bf16) restores the weights exactly; casting down
        and back rounds them.
        """
        previous = self.dtype
        if dtype == previous:
            yield
            return
        self.model.to(dtype)
        self.dtype = dtype
        try:
            yield
        finally:
            self.model.to(previous)
            self.dtype = previous

    @contextlib.contextmanager
    def attention_implementation(self, name: str) -> Iterator[None]:
        """Run the body with another attention implementation, then restore the usual one.

        The usual one is `attn_implementation`, as recorded here: transformers has a public setter
        (`set_attn_implementation`) but no public getter, so the model is never asked. Not nestable.
        """
        if name == self.attn_implementation:
            yield
            return
        self.model.set_attn_implementation(name)
        try:
            yield
        finally:
            self.model.set_attn_implementation(self.attn_implementation)

    @contextlib.contextmanager
    def capture_attention(self, reduce: Callable[[int, Tensor], None]) -> Iterator[None]:
        """Call `reduce(layer, probs)` with each layer's attention probabilities (batch, head, query, key).

        Runs eager attention for the duration (only eager returns the weights) and drops each pattern
        once reduced, so memory stays at one layer's pattern.
        """

        def hook(layer: int):
            def on_output(_module, _args, output):
                reduce(layer, output[1])
                return (output[0], None)

            return on_output

        with self.attention_implementation("eager"), hooks(
            self.attention(l).register_forward_hook(hook(l)) for l in range(self.n_layers)
        ):
            yield

    def load_weights(self, weights_dir: Path) -> None:
        """Load a checkpoint of the same architecture into the already-built module, in place."""
        self.apply_state(self.read_state(weights_dir), weights_dir)

    def read_state(self, weights_dir: Path) -> dict[str, Tensor]:
        """A checkpoint's tensors, renamed and cast for this model; touches no module state, so a
        background thread can read the next checkpoint while this one is scored."""
        state = _rename_checkpoint_keys(self.model, read_state_dict(weights_dir))
        return {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in state.items()}

    def apply_state(self, state: dict[str, Tensor], weights_dir: Path) -> None:
        """Copy `read_state` output into the module's parameters."""
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # Tied or buffer-only keys (rotary inv_freq, GPT-2's masked bias) may be absent from files.
        missing = [k for k in missing if not _is_optional_key(self.model, k)]
        if missing or unexpected:
            raise InputError(
                f"checkpoint in {weights_dir} does not match the loaded architecture "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}); load it into a fresh model"
            )
        self.model.tie_weights()


def _rename_checkpoint_keys(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Apply transformers' own renamings of older checkpoint keys (Pythia's `embed_out` is `lm_head` now)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    renamings = [
        (re.compile(source), target)
        for rule in get_model_conversion_mapping(model)
        if isinstance(rule, WeightRenaming)
        for source, target in zip(rule.source_patterns, rule.target_patterns)
    ]
    renamed = {}
    for key, tensor in state.items():
        for pattern, target in renamings:
            key = pattern.sub(target, key)
        renamed[key] = tensor
    return renamed


def _is_optional_key(model: nn.Module, key: str) -> bool:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    tied_keys = tied.keys() if isinstance(tied, dict) else tied
    return key in tied_keys or "rotary_emb" in key or key.endswith((".bias", "masked_bias")) and "attn" in key


def read_state_dict(weights_dir: Path) -> dict[str, Tensor]:
    """Read a checkpoint's tensors without executing code: safetensors first, `.bin` only with weights_only.

    An unreadable file raises a one-line ValueError naming that file (and its Hub-cache blob).
    """
    import safetensors
    from safetensors.torch import load_file

    from dynamics.sources.weight_files import corrupt_file_error, select_weight_files

    state: dict[str, Tensor] = {}
    for shard in select_weight_files(weights_dir):
        try:
            if shard.suffix == ".safetensors":
                state.update(load_file(shard))
            else:
                state.update(torch.load(shard, map_location="cpu", weights_only=True))
        except (safetensors.SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as err:
            raise corrupt_file_error(shard, str(err)) from err
    return state


def load_model(
    checkpoint_dir: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Build the model described by `checkpoint_dir/config.json` and load its weights.

    Never runs remote code. Later revisions of the same architecture go through
    `LoadedModel.load_weights` instead of building a new module.
    """
    from transformers import AutoModelForCausalLM

    from dynamics.sources.weight_files import check_weight_file, select_weight_files

    checkpoint_dir = Path(checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise MissingInputError(f"no config.json in {checkpoint_dir}; is it a save_pretrained checkpoint?")
    check_architecture(config_path, str(checkpoint_dir))  # before reading any weights
    for path in select_weight_files(checkpoint_dir):  # a damaged file fails here, named, not deep in transformers
        check_weight_file(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint_dir, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=False
        )
    except OSError as err:
        raise InputError(
            f"cannot load the checkpoint in {checkpoint_dir} ({err}); its weight file may be corrupt or truncated: "
            "fetch the revision again"
        ) from err
    except pickle.UnpicklingError as err:  # a .bin file that a weights-only load refuses: it holds code
        raise InputError(
            f"refused to load the checkpoint in {checkpoint_dir}: its .bin weights hold objects other than tensors "
            f"({first_line(err)}); use a safetensors checkpoint or one from a source you trust"
        ) from err
    model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, family=family_of(model), dtype=dtype, attn_implementation=attn_implementation)


def from_module(model: nn.Module, *, attn_implementation: str = "sdpa") -> LoadedModel:
    """Wrap an already-built transformers model (tests and notebooks), set to run `attn_implementation`.

    Set, not read back: transformers has no public getter for it. The default is `load_model`'s.
    """
    model.eval()
    model.requires_grad_(False)
    model.set_attn_implementation(attn_implementation)
    return LoadedModel(
        model=model,
        family=family_of(model),
        dtype=next(model.parameters()).dtype,
        attn_implementation=attn_implementation,
    )
