"""The preference-data layer: every common format in, clean token batches out, nothing lost.

    from alphapo.data import DataConfig, load_dataset_for_training, Collator, length_grouped_batches
    ds = load_dataset_for_training(DataConfig(paths=["prefs.jsonl"]), tokenizer, output_dir="runs/x")
    batch = Collator(tokenizer.pad_token_id)([ds[i] for i in range(4)])

Formats (detected from the columns): paired ``prompt/chosen/rejected``, implicit ``chosen/rejected``,
unpaired ``prompt/completion/label`` (KTO), and SFT ``prompt/completion`` or ``messages``; each as
plain text or as conversations. Sources: JSONL(.gz), JSON, Parquet, ``save_to_disk`` directories,
hub names.
"""

from alphapo.data.collate import IGNORE_INDEX, Collator, length_grouped_batches
from alphapo.data.config import DataConfig
from alphapo.data.dataset import SKIPPED_FILE, DataReport, TokenizedDataset, load_dataset_for_training

__all__ = [
    "IGNORE_INDEX",
    "SKIPPED_FILE",
    "Collator",
    "DataConfig",
    "DataReport",
    "TokenizedDataset",
    "length_grouped_batches",
    "load_dataset_for_training",
]
