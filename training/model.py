"""The granite-geospatial-biomass architecture in plain PyTorch: Swin backbone + UPerNet + regression head.

Module names equal the ones TerraTorch 1.2 gives the same model (``prithvi_swin_B`` through timm's
``features_only`` wrapper, ``UperNetDecoder``, ``RegressionHead``), so a TerraTorch / Lightning state dict
loads with no renaming beyond stripping the ``model.`` prefix (see
``../shared/reference/granite_swin_b_upernet_state_dict.tsv``). Input: ``(B, bands, H, W)`` float32,
normalised reflectance; output: ``(B, H, W)`` above-ground biomass in Mg/ha (>= 0, ReLU).

This module imports nothing but torch, so the TerraTorch interop environment can import it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

DEFAULT_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one preset. ``in_channels`` = number of input bands (default the six HLS bands)."""

    preset: str
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    decoder_channels: int = 32
    patch_size: int = 4
    window_size: int = 7
    mlp_ratio: float = 4.0
    in_channels: int = 6
    learned_upscale_layers: int = 2
    drop_path_rate: float = 0.1
    head_dropout: float = 0.0
    pool_scales: tuple[int, ...] = field(default=(1, 2, 3, 6))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("depths", "num_heads", "pool_scales"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        for key in ("depths", "num_heads", "pool_scales"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # granite-geospatial-biomass: prithvi_swin_B + UperNetDecoder(32) + 2 learned x2 upscales
    "swin_b": ModelConfig("swin_b", 128, (2, 2, 18, 2), (4, 8, 16, 32), drop_path_rate=0.3, head_dropout=0.16),
    "swin_t": ModelConfig("swin_t", 96, (2, 2, 6, 2), (3, 6, 12, 24), drop_path_rate=0.2, head_dropout=0.1),
    # for 2-core CPUs and tests: trains in about a minute on the demo world
    "tiny": ModelConfig("tiny", 48, (1, 1, 2, 1), (2, 4, 8, 16), decoder_channels=32, drop_path_rate=0.0),
}


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of ``preset`` (``swin_b``, ``swin_t``, ``tiny``) with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


# ----------------------------------------------------------------------------------------------- backbone
class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at rate 0)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: Tensor) -> Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """Conv patchify (kernel = stride = patch); pads bottom/right by replication to a multiple of it."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:
            x = F.pad(x, [0, pad_w, 0, pad_h], mode="replicate")
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class PatchMerging(nn.Module):
    """2x2 merge; channel order of ``nn.Unfold`` (c, kh, kw) as in TerraTorch/MMSeg, zero corner padding."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, (h // 2) * (w // 2), 4 * c)
        return self.reduction(self.norm(x)), (h // 2, w // 2)


def _relative_position_index(window: int) -> Tensor:
    """MMSeg's (Wh*Ww, Wh*Ww) index into the (2W-1)^2 relative position bias table."""
    seq1 = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq2 = torch.arange(0, window, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


class WindowMSA(nn.Module):
    """Window multi-head self-attention with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # 1, heads, n, n
        if mask is not None:  # (nW, n, n): windows of one image are consecutive in the batch
            nw = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).unsqueeze(0)  # 1, nW, heads, n, n
            q, k, v = (t.view(bw // nw, nw, self.num_heads, n, -1) for t in qkv.unbind(0))
        else:
            q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        out = out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class ShiftWindowMSA(nn.Module):
    """Pads to whole windows, cyclic shift (shifted blocks), window attention, reverse."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.w_msa = WindowMSA(dim, num_heads, window)
        self.drop = DropPath(drop_path)
        self._mask_cache: dict[tuple[int, int, str], Tensor] = {}

    def _attn_mask(self, hp: int, wp: int, device: torch.device) -> Tensor:
        key = (hp, wp, str(device))
        if key not in self._mask_cache:
            ws, s = self.window, self.shift
            img = torch.zeros((1, hp, wp, 1), device=device)
            cnt = 0
            for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                    img[:, hs, wsl, :] = cnt
                    cnt += 1
            win = _window_partition(img, ws).view(-1, ws * ws)
            diff = win.unsqueeze(1) - win.unsqueeze(2)
            self._mask_cache[key] = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
        return self._mask_cache[key]

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        b, _, c = x.shape
        h, w = hw
        ws = self.window
        x = x.view(b, h, w, c)
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = self._attn_mask(hp, wp, x.device)
        win = _window_partition(x, ws).view(-1, ws * ws, c)
        win = self.w_msa(win, mask=mask).view(-1, ws, ws, c)
        x = _window_reverse(win, hp, wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_r or pad_b:
            x = x[:, :h, :w, :].contiguous()
        return self.drop(x.reshape(b, h * w, c))


def _window_partition(x: Tensor, ws: int) -> Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def _window_reverse(windows: Tensor, h: int, w: int) -> Tensor:
    ws = windows.shape[1]
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class FFN(nn.Module):
    """Linear-GELU-Linear with residual; ``layers.0.0`` / ``layers.1`` as MMCV names them."""

    def __init__(self, dim: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)), nn.Linear(hidden, dim), nn.Dropout(0.0)
        )
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        return identity + self.dropout_layer(self.layers(x))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, window: int, shift: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(dim, num_heads, window, window // 2 if shift else 0, drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, hidden, drop_path)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return self.ffn(self.norm2(x), identity=x)


class SwinStage(nn.Module):
    """Blocks (alternating plain / shifted windows), then the stage's output norm and a patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, cfg: ModelConfig, dpr: list[float], last: bool):
        super().__init__()
        hidden = int(cfg.mlp_ratio * dim)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, hidden, cfg.window_size, i % 2 == 1, dpr[i]) for i in range(depth)
        )
        self.downsample = None if last else PatchMerging(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x, hw)
        feature = self.norm(x).view(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2)  # NCHW
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        return feature, x, hw


class SwinBackbone(nn.Module):
    """MMSeg-style Swin Transformer returning the 4 normalised stage outputs (strides 4, 8, 16, 32), NCHW."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.embed_dim, cfg.patch_size)
        total = sum(cfg.depths)
        dpr = [float(v) for v in torch.linspace(0, cfg.drop_path_rate, total)] if total else []
        self.num_stages = len(cfg.depths)
        self.out_channels = [cfg.embed_dim * 2**i for i in range(self.num_stages)]
        start = 0
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads, strict=True)):
            stage = SwinStage(self.out_channels[i], depth, heads, cfg, dpr[start : start + depth],
                              last=i == self.num_stages - 1)
            self.add_module(f"stages_{i}", stage)  # timm's flatten_sequential names: stages_0 ... stages_3
            start += depth

    def forward(self, x: Tensor) -> list[Tensor]:
        x, hw = self.patch_embed(x)
        features = []
        for i in range(self.num_stages):
            feature, x, hw = getattr(self, f"stages_{i}")(x, hw)
            features.append(feature.contiguous())
        return features


# ------------------------------------------------------------------------------------------------ decoder
class ConvModule(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class UperNetDecoder(nn.Module):
    """UPerNet (PPM on the last level + FPN), bilinear with align_corners=True as TerraTorch; stride-4 output."""

    def __init__(self, in_channels: list[int], channels: int, pool_scales: tuple[int, ...]) -> None:
        super().__init__()
        self.pool_scales = pool_scales
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels[-1], channels, 1)) for s in pool_scales
        )
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        def up(t: Tensor, size: torch.Size) -> Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=True)

        top = inputs[-1]
        psp = [top] + [up(m(top), top.shape[2:]) for m in self.psp_modules]
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.bottleneck(torch.cat(psp, dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1].shape[2:])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals) - 1)] + [laterals[-1]]
        outs = [outs[0]] + [up(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))


# --------------------------------------------------------------------------------------------------- head
class PixelShuffleUpscale(nn.Module):
    """Learned x2 upscale: conv to 4C, PixelShuffle(2), BatchNorm, ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, kernel_size=3, padding=1)
        self.upscale = nn.PixelShuffle(2)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.upscale(self.conv(x))))


class RegressionHead(nn.Module):
    """``head`` = Sequential(Sequential(upscales...), Dropout2d, Conv1x1 -> 1), then ReLU."""

    def __init__(self, channels: int, upscale_layers: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if upscale_layers:
            layers.append(nn.Sequential(*[PixelShuffleUpscale(channels) for _ in range(upscale_layers)]))
        layers += [nn.Dropout2d(dropout), nn.Conv2d(channels, 1, kernel_size=1)]
        self.head = nn.Sequential(*layers)
        self.final_act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.final_act(self.head(x))


class BiomassModel(nn.Module):
    """Swin + UPerNet + regression head; ``forward`` maps (B, C, H, W) normalised bands to (B, H, W) Mg/ha."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = SwinBackbone(cfg)
        self.decoder = UperNetDecoder(self.encoder.out_channels, cfg.decoder_channels, cfg.pool_scales)
        self.head = RegressionHead(cfg.decoder_channels, cfg.learned_upscale_layers, cfg.head_dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d) and name.startswith(("decoder", "head")):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, WindowMSA):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def set_output_bias(self, value: float) -> None:
        """Start the final 1x1 conv at ``value`` Mg/ha (e.g. the training label mean): faster convergence."""
        with torch.no_grad():
            self.head.head[-1].bias.fill_(float(value))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        out = self.head(self.decoder(self.encoder(x)))
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear")
        return out[:, 0]


def build_model(preset: str = "tiny", *, in_channels: int = 6, **overrides: Any) -> BiomassModel:
    """A freshly initialised model of ``preset`` for ``in_channels`` input bands."""
    return BiomassModel(model_config(preset, in_channels=in_channels, **overrides))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def freeze_backbone(model: BiomassModel) -> int:
    """Stop gradients through the encoder (granite's frozen-encoder setting); returns frozen parameter count."""
    n = 0
    for p in model.encoder.parameters():
        p.requires_grad_(False)
        n += p.numel()
    return n


__all__ = [
    "DEFAULT_BANDS", "PRESETS", "BiomassModel", "ModelConfig", "build_model", "count_parameters",
    "freeze_backbone", "model_config",
]
