from pathlib import Path
import re

def sub(path, old, new, count=1):
    p = Path(path); s = p.read_text()
    assert old in s, (path, old[:80])
    p.write_text(s.replace(old, new, count))

# ---- evaluation.py: Table I moves to evaluate_inpainter
sub("pipelines/evaluation.py", "    table1: list[dict] = field(default_factory=list)  # one per (offset, pair)\n", "")
sub("pipelines/evaluation.py", "    table1_offsets: list[int], buckets: list[str], canny_sigma: float, lpips: LPIPS | None = None,",
    "    buckets: list[str], canny_sigma: float, lpips: LPIPS | None = None,")
p = Path("pipelines/evaluation.py"); s = p.read_text()
start = s.index("        for offset in table1_offsets:\n")
end = s.index("        for key in (\"image\", \"background\", \"mask\"):\n")
s = s[:start] + s[end:]
start = s.index('    lines.extend(["## Table I: the true mask eroded (-) or dilated (+), pretrained inpainters", "",')
end = s.index('    lines.extend(["", "PSNR / SSIM per cell.", "", "## Perceptual metrics", ""])')
s = s[:start] + '    lines.extend(["## Perceptual metrics", ""])' + s[end + len('    lines.extend(["", "PSNR / SSIM per cell.", "", "## Perceptual metrics", ""])'):]
s = s.replace('''    lines.extend(["", f"- Table II: {metrics['table2']}", "", "## Samples", "",''', '''    lines.extend(["", "The paper's Tables I-III (the inpainters on the true mask, eroded, dilated, trained on random "
                  "masks) are stage evaluate_inpainter's (reports/inpainter_evaluation.json) and `make paper`'s "
                  "(reports/paper.md).", "", "## Samples", "",''')
start = s.index("def plot_rows(metrics: dict)")
s = s[:start] + '''def plot_rows(metrics: dict) -> tuple[list[dict], list[dict]]:
    """DVC plot data: PSNR and the clean-removal rate by bucket (bucket_rows)."""
    return bucket_rows(metrics, "psnr"), bucket_rows(metrics, "clean")


def table1_rows(table1: dict) -> list[dict]:
    """DVC plot data of the paper's Table I (stage evaluate_inpainter): x = the offset in paper px, a PSNR
    column per bucket."""
    rows = []
    for offset, cells in table1.items():
        row = {"offset_paper_px": float(offset)}
        row.update({f"psnr_{b}": c["psnr"] for b, c in cells.items()})
        rows.append(row)
    return rows
'''
p.write_text(s)
sub("pipelines/evaluation.py", '''"""The evaluation: every method on the held-out pairs, metrics by mask-ratio bucket, the paper's Table I.''',
    '''"""The evaluation: every method on the held-out pairs, metrics by mask-ratio bucket; the inpainters alone on
the true mask, eroded and dilated (the paper's Table I, stage evaluate_inpainter).''')

# ---- data.py: WithBuckets, object_pairs
sub("pipelines/data.py", '''    def __init__(self, config: PairsConfig, split: str, augment: bool, mask_source: MaskSource = "object"):
        import albumentations as A''', '''    def __init__(self, config: PairsConfig, split: str, augment: bool, mask_source: MaskSource = "object",
                 object_pairs: int | None = None):
        import albumentations as A''')
sub("pipelines/data.py", '''        self.config, self.split, self.augment, self.mask_source = config, split, augment, mask_source
''', '''        self.config, self.split, self.augment, self.mask_source = config, split, augment, mask_source
        if object_pairs is not None and not 0 < object_pairs <= len(self.records):
            raise ValueError(f"object_pairs is {object_pairs}, but the {split} split of {config.root} has "
                             f"{len(self.records)} pairs (pretrain_inpainter.object_pairs: 1 to {len(self.records)}, or null)")
        self.object_pairs = object_pairs
''')
sub("pipelines/data.py", '''        record = self.records[index]
        files = record["files"]
        rng = np.random.default_rng([self.config.seed, self.epoch, index])''', '''        source = index % self.object_pairs if self.object_pairs and self.mask_source == "object" else index
        files = self.records[source]["files"]
        rng = np.random.default_rng([self.config.seed, self.epoch, index])''')
sub("pipelines/data.py", '''free-form brush mask with a ratio drawn over the evaluation buckets (the paper's random-mask
pretraining, Tables II and III).''', '''free-form brush mask with a ratio drawn over the evaluation buckets (the paper's random-mask
pretraining, Tables II and III). With `object_pairs` = N, the object-mask items come from the first N
pairs only, repeated to the split's length (item i shows pair i mod N, with item i's own random draws):
a smaller object-mask training set for as many updates (the paper's Table III).''')
sub("pipelines/data.py", '''class PairsDataModule(L.LightningDataModule):
    def __init__(self, config: PairsConfig, batch_size: int, num_workers: int, mask_source: MaskSource = "object"):
        super().__init__()
        self.config, self.batch_size, self.num_workers, self.mask_source = config, batch_size, num_workers, mask_source
''', '''class PairsDataModule(L.LightningDataModule):
    def __init__(self, config: PairsConfig, batch_size: int, num_workers: int, mask_source: MaskSource = "object",
                 object_pairs: int | None = None):
        super().__init__()
        self.config, self.batch_size, self.num_workers, self.mask_source = config, batch_size, num_workers, mask_source
        self.object_pairs = object_pairs  # the training split's object-mask items: its first N pairs (None: all)
''')
sub("pipelines/data.py", '''        self.train_set = PairsDataset(self.config, "train", augment=True, mask_source=self.mask_source)''',
    '''        self.train_set = PairsDataset(self.config, "train", augment=True, mask_source=self.mask_source,
                                      object_pairs=self.object_pairs)''')
sub("pipelines/data.py", '''class PairsDataModule(L.LightningDataModule):''', '''class WithBuckets(PairsDataset):
    """Held-out pairs with their mask-ratio bucket (from the manifest) in each item: the evaluations'."""

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "bucket": self.records[index]["bucket"]}


class PairsDataModule(L.LightningDataModule):''')

# ---- evaluate stage
p = Path("pipelines/stages/evaluate.py"); s = p.read_text()
start = s.index("class WithBuckets(PairsDataset):"); end = s.index("def load_models(")
s = s[:start] + s[end:]
s = s.replace("from pipelines.data import PairsDataset, pairs_config", "from pipelines.data import WithBuckets, pairs_config")
s = s.replace("p.dilation_px, p.table1_offsets_px, buckets,", "p.dilation_px, buckets,")
s = s.replace('''        "table1": summarize(result.table1, ("psnr", "ssim"), "offset_px", buckets),
''', "")
start = s.index('        "table2": ("skipped:'); end = s.index("    }\n", start)
s = s[:start] + s[end:]
s = s.replace("    by_bucket, clean, table1 = plot_rows(metrics)", "    by_bucket, clean = plot_rows(metrics)")
s = s.replace('''        write_json(reports / "plots" / "table1.json", table1)
''', "")
s = s.replace('''mlflow.log_metrics(flat_metrics({"methods": metrics["methods"], "table1": metrics["table1"],
                                         "fid": metrics["fid"] or {}}))''', '''mlflow.log_metrics(flat_metrics({"methods": metrics["methods"], "fid": metrics["fid"] or {}}))''')
s = s.replace('''mask-ratio bucket, plus the paper's Table I (the true mask eroded / dilated, pretrained inpainters).''',
              '''mask-ratio bucket (the paper's Table I, the inpainters alone, is stage evaluate_inpainter's).''')
s = s.replace('''`reports/plots/evaluate_buckets.json` and
`reports/plots/table1.json` (`dvc plots show`)''', '''`reports/plots/evaluate_buckets.json` and
`reports/plots/evaluate_clean.json` (`dvc plots show`)''')
p.write_text(s)
sub("pipelines/stages/evaluate_inpainter.py", "from pipelines.data import pairs_config", "from pipelines.data import WithBuckets, pairs_config")
sub("pipelines/stages/evaluate_inpainter.py", "from pipelines.stages.evaluate import WithBuckets\n", "")

# ---- pretrain_inpainter
sub("pipelines/stages/pretrain_inpainter.py", "    data = PairsDataModule(data_config, p.batch_size, params.trainer.num_workers)",
    "    data = PairsDataModule(data_config, p.batch_size, params.trainer.num_workers, object_pairs=p.object_pairs)")
sub("pipelines/stages/pretrain_inpainter.py", '''masks for the first `random_mask_epochs`.''', '''masks for the first `random_mask_epochs`, and then on the first `object_pairs` training pairs only
when that is set (the paper's Tables II and III: `make paper`).''')

# ---- params.py
sub("pipelines/params.py", '''    random_mask_epochs: Annotated[int, Field(ge=0)]  # first epochs on free-form masks (paper Tables II/III)
''', '''    random_mask_epochs: Annotated[int, Field(ge=0)]  # first epochs on free-form masks (paper Tables II/III)
    object_pairs: PositiveInt | None  # the object-mask epochs use the first N training pairs (paper Table III)
''')
sub("pipelines/params.py", '''    table1_offsets_px: Annotated[list[int], Field(min_length=1)]  # the paper's Table I: -2, 0, 2, 4, 6, 8
''', "")
sub("pipelines/params.py", '''class ExportParams(Section):''', '''class EvaluateInpainterParams(Section):
    """The pretrained inpainters on the true mask, eroded and dilated (the paper's Table I)."""

    split: Literal["val", "test"]
    batch_size: PositiveInt
    offsets_paper_px: Annotated[list[float], Field(min_length=1)]  # - erodes, + dilates, in the paper's pixels
    paper_image_size: PositiveInt  # the paper's image size (256): offsets scale by networks.image_size / this


class PaperParams(Section):
    """`make paper` (pipelines/paper.py): which DVC experiments reproduce the paper's Tables II-V."""

    seeds: Annotated[list[Seed], Field(min_length=1)]  # finetune_joint.seed of Tables IV and V (mean, sd)
    alphas: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)]  # Table IV: MEL's alpha
    random_mask_epochs: PositiveInt  # Table II: the inpainter trained on random masks only, for this many epochs
    finetune_epochs: PositiveInt  # Table III: then this many epochs on object masks
    finetune_pairs: Annotated[list[PositiveInt], Field(min_length=1)]  # Table III: the object-mask set sizes

    @field_validator("seeds", "alphas", "finetune_pairs")
    @classmethod
    def _distinct(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"values must be distinct, got {value}")
        return value


class ExportParams(Section):''')
sub("pipelines/params.py", '''    evaluate: EvaluateParams
    export: ExportParams''', '''    evaluate: EvaluateParams
    evaluate_inpainter: EvaluateInpainterParams
    export: ExportParams''')
sub("pipelines/params.py", '''    registry: RegistryParams

    @field_validator''', '''    registry: RegistryParams
    paper: PaperParams

    @field_validator''')

# ---- params.yaml
sub("params.yaml", '''  random_mask_epochs: 0
''', '''  random_mask_epochs: 0
  object_pairs: null      # the object-mask epochs on the first N training pairs only (make paper's Table III)
''')
sub("params.yaml", '''  table1_offsets_px: [-2, 0, 2, 4, 6, 8]   # true mask eroded (-) / dilated (+), at the working resolution
''', "")
sub("params.yaml", '''export:                   # the joint model to ONNX''', '''evaluate_inpainter:       # the pretrained inpainters on the true mask M_G, eroded and dilated: the paper's Table I
  split: test
  batch_size: 50
  offsets_paper_px: [-2, 0, 2, 4, 6, 8]   # - erodes, + dilates, in the paper's pixels (fractional here: 0.5 px at 64)
  paper_image_size: 256

export:                   # the joint model to ONNX''')
p = Path("params.yaml"); s = p.read_text().rstrip("\n") + '''

paper:                    # make paper (pipelines/paper.py): the paper's Tables I-V as DVC experiments (README)
  seeds: [0, 1, 2]        # finetune_joint.seed of Tables IV and V: mean and sd over these
  alphas: [0.01, 0.03, 0.05, 0.07]   # Table IV
  random_mask_epochs: 3   # Table II: the inpainter on free-form random masks only (as many epochs as pretraining)
  finetune_epochs: 1      # Table III: that inpainter then fine-tuned on object masks for one epoch's updates
  finetune_pairs: [400, 1200, 2000]  # Table III: 20 / 60 / 100 % of the training pairs (paper: 20k / 60k / 100k)
'''
p.write_text(s)

# ---- dvc.yaml
sub("dvc.yaml", """  - reports/plots/table1.json:
      x: offset_px""", """  - reports/plots/table1.json:
      x: offset_paper_px""")
sub("dvc.yaml", """      - ${paths.reports}/plots/evaluate_clean.json:
          cache: false
      - ${paths.reports}/plots/table1.json:
          cache: false
""", """      - ${paths.reports}/plots/evaluate_clean.json:
          cache: false
""")
sub("dvc.yaml", """  export:
    cmd: python -m pipelines.stages.export""", """  evaluate_inpainter:
    cmd: python -m pipelines.stages.evaluate_inpainter
    deps:
      - ${paths.pairs}
      - ${paths.segmenter}
      - ${paths.inpainter}
      - pipelines/stages/evaluate_inpainter.py
      - pipelines/evaluation.py
      - pipelines/checkpoints.py
      - pipelines/data.py
      - pipelines/tracking.py
      - pipelines/common.py
      - pipelines/params.py
      - components/coco.py
      - components/segmenter.py
      - components/instances.py
      - components/selection.py
      - components/inference.py
      - components/backends.py
      - components/torch_backend.py
      - components/export_contract.py
      - components/inpainters.py
      - components/inpainting.py
      - components/metrics.py
      - components/masks.py
      - components/perceptual_metrics.py
    params:
      - paths.reports
      - networks.image_size
      - pretrain_inpainter.canny_sigma
      - evaluate_inpainter
    metrics:   # the headline; the full table is an output
      - ${paths.reports}/headline/evaluate_inpainter.json:
          cache: false
    plots:
      - ${paths.reports}/plots/table1.json:
          cache: false
    outs:
      - ${paths.reports}/inpainter_evaluation.json:
          cache: false

  export:
    cmd: python -m pipelines.stages.export""")

# ---- harness: atomic checkpoint writes
sub("pipelines/training/harness.py", '''def build_trainer(''', '''class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on any local filesystem: the checkpoint goes to a temporary
    file beside its target, is flushed to disk, then renamed over it (os.replace). A kill at any moment
    leaves the previous `last.ckpt` / `best.ckpt` or the new one, never a truncated file. (Lightning's own
    write stages the file in the system temp folder and moves it, which is a copy, not a rename, when that
    folder is on another filesystem.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


def build_trainer(''')
sub("pipelines/training/harness.py", '''        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False, default_root_dir=str(folder),
    )''', '''        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False, default_root_dir=str(folder),
        plugins=[AtomicCheckpointIO()],
    )''')
sub("pipelines/training/harness.py", "from lightning.pytorch.callbacks import Callback, ModelCheckpoint\n",
    "from lightning.fabric.plugins import TorchCheckpointIO\nfrom lightning.pytorch.callbacks import Callback, ModelCheckpoint\n")
