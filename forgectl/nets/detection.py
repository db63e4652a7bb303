"""Training-only box branches: supervise feature maps with the boxes of manipulated regions.

Both heads take feature maps at two strides and the ground-truth boxes and return a dict of
losses; they predict nothing at inference and are not built there. ``kind`` selects one:

- ``"dense"``: an FCOS-like anchor-free head (objectness per position + distances to the box
  sides), cheap enough for CPU training;
- ``"rcnn"``: torchvision's region-proposal network and RoI heads (Faster R-CNN, two classes),
  as in the paper.

Boxes: a list (one per image) of ``(N_i, 4)`` float ``x0, y0, x1, y1`` in input pixels,
possibly empty.
"""

from __future__ import annotations

import torch
from torch import nn

from forgectl.nets.attention import conv_bn_relu


def _giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean generalized-IoU loss of matching (N, 4) x0y0x1y1 boxes."""
    from torchvision.ops import generalized_box_iou_loss

    return generalized_box_iou_loss(pred, target, reduction="mean")


class DenseBoxHead(nn.Module):
    """Anchor-free box head on several maps (shared tower; FCOS assignment without centerness).

    A position is positive for a box when its cell centre lies inside the box, or when it is the
    cell holding the box's centre (so boxes smaller than a cell still get one positive); among
    several boxes the smallest wins. Losses: sigmoid focal loss on objectness (normalized by the
    number of positives) and GIoU on the boxes predicted at positive positions.

    Shapes: ``feats [(B, C_i, H / s_i, W / s_i)]`` with strides ``strides``.
    """

    def __init__(self, in_channels: list[int], strides: list[int], channels: int = 64) -> None:
        super().__init__()
        self.strides = list(strides)
        self.inputs = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels)
        self.tower = conv_bn_relu(channels, channels, 3)
        self.objectness = nn.Conv2d(channels, 1, 3, padding=1)
        self.regression = nn.Conv2d(channels, 4, 3, padding=1)
        nn.init.constant_(self.objectness.bias, -4.6)  # prior 1 %: few positives per image

    def _targets(self, boxes: torch.Tensor, h: int, w: int, stride: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(H*W,) bool positives and (H*W, 4) assigned boxes for one image at one level."""
        device = boxes.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        cy, cx = cy.reshape(-1, 1), cx.reshape(-1, 1)
        if boxes.numel() == 0:
            return torch.zeros(h * w, dtype=torch.bool, device=device), cy.new_zeros(h * w, 4)
        x0, y0, x1, y1 = boxes.unbind(1)
        inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)  # (HW, N)
        centre_cell = ((((y0 + y1) / 2) // stride).clamp(0, h - 1) * w
                       + (((x0 + x1) / 2) // stride).clamp(0, w - 1)).long()
        inside[centre_cell, torch.arange(len(boxes), device=device)] = True
        area = ((x1 - x0) * (y1 - y0)).unsqueeze(0).expand_as(inside)
        area = torch.where(inside, area, torch.full_like(area, float("inf")))
        best = area.argmin(dim=1)
        return inside.any(dim=1), boxes[best]

    def forward(self, feats: list[torch.Tensor], boxes: list[torch.Tensor],
                image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        from torchvision.ops import sigmoid_focal_loss

        obj_losses, obj_targets, pred_boxes, gt_boxes = [], [], [], []
        for feat, conv, stride in zip(feats, self.inputs, self.strides, strict=True):
            x = self.tower(conv(feat))
            logits = self.objectness(x).flatten(1)  # (B, HW)
            dist = torch.exp(self.regression(x).clamp(max=8.0)) * stride  # (B, 4, H, W)
            b, _, h, w = dist.shape
            ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) * stride
            xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            for i in range(b):
                pos, assigned = self._targets(boxes[i].to(x.dtype), h, w, stride)
                obj_losses.append(logits[i])
                obj_targets.append(pos.to(x.dtype))
                if pos.any():
                    d = dist[i].flatten(1).t()[pos]  # (P, 4): left, top, right, bottom
                    px, py = cx.reshape(-1)[pos], cy.reshape(-1)[pos]
                    pred_boxes.append(torch.stack([px - d[:, 0], py - d[:, 1],
                                                   px + d[:, 2], py + d[:, 3]], dim=1))
                    gt_boxes.append(assigned[pos])
        logits = torch.cat(obj_losses)
        targets = torch.cat(obj_targets)
        n_pos = max(1.0, float(targets.sum()))
        loss_obj = sigmoid_focal_loss(logits, targets, reduction="sum") / n_pos
        if pred_boxes:
            loss_box = _giou_loss(torch.cat(pred_boxes), torch.cat(gt_boxes))
        else:
            loss_box = logits.sum() * 0.0
        return {"det_objectness": loss_obj, "det_box": loss_box}


class RCNNBoxHead(nn.Module):
    """torchvision Faster R-CNN heads (RPN + RoI heads, classes background/manipulated).

    Maps are projected to ``channels`` (the RPN head is shared across levels); anchors of three
    sizes per level, aspect ratios 0.5, 1, 2; RoIAlign 7x7 on both levels.
    """

    def __init__(self, in_channels: list[int], strides: list[int], channels: int = 64,
                 rpn_train_pre_nms: int = 600, rpn_train_post_nms: int = 200,
                 roi_batch: int = 128) -> None:
        super().__init__()
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.roi_heads import RoIHeads
        from torchvision.models.detection.rpn import (
            AnchorGenerator,
            RegionProposalNetwork,
            RPNHead,
        )
        from torchvision.ops import MultiScaleRoIAlign

        self.inputs = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels)
        self.names = [str(i) for i in range(len(in_channels))]
        sizes = tuple(tuple(4 * s * m for m in (1, 2, 4)) for s in strides)
        anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(strides))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=128,
            positive_fraction=0.5,
            pre_nms_top_n={"training": rpn_train_pre_nms, "testing": 300},
            post_nms_top_n={"training": rpn_train_post_nms, "testing": 100}, nms_thresh=0.7,
        )
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(self.names, output_size=7, sampling_ratio=2),
            TwoMLPHead(channels * 49, 256), FastRCNNPredictor(256, 2),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=roi_batch,
            positive_fraction=0.25, bbox_reg_weights=None, score_thresh=0.05, nms_thresh=0.5,
            detections_per_img=100,
        )

    def forward(self, feats: list[torch.Tensor], boxes: list[torch.Tensor],
                image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        from torchvision.models.detection.image_list import ImageList

        if not self.training:
            raise RuntimeError("the box branch is for training only")
        maps = {n: conv(f) for n, conv, f in zip(self.names, self.inputs, feats, strict=True)}
        b = feats[0].shape[0]
        dummy = feats[0].new_zeros(b, 1, *image_size)  # only its size is read
        images = ImageList(dummy, [tuple(image_size)] * b)
        targets = [{"boxes": bx.to(feats[0].dtype).reshape(-1, 4),
                    "labels": torch.ones(len(bx), dtype=torch.int64, device=bx.device)}
                   for bx in boxes]
        proposals, rpn_losses = self.rpn(images, maps, targets)
        _, roi_losses = self.roi_heads(maps, proposals, images.image_sizes, targets)
        return {
            "det_rpn_objectness": rpn_losses["loss_objectness"],
            "det_rpn_box": rpn_losses["loss_rpn_box_reg"],
            "det_classifier": roi_losses["loss_classifier"],
            "det_box": roi_losses["loss_box_reg"],
        }


BOX_HEADS = {"dense": DenseBoxHead, "rcnn": RCNNBoxHead}


def create_box_head(kind: str, in_channels: list[int], strides: list[int], channels: int
                    ) -> nn.Module:
    try:
        cls = BOX_HEADS[kind]
    except KeyError:
        raise ValueError(f"unknown box head {kind!r} (known: {', '.join(BOX_HEADS)})") from None
    return cls(in_channels, strides, channels)
