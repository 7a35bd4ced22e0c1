"""Hybrid teachers: an ensemble of teachers of different kinds, combined into one target distribution.

    from kdkit.teachers import FileTeacher, HybridTeacher, ProbaTeacher, TorchTeacher
    teacher = HybridTeacher([
        TorchTeacher(resnet, name="resnet"),          # nn.Module: normalised x (B, C, H, W) -> logits (B, K)
        ProbaTeacher(gbm, name="gbm"),                # anything with predict_proba (scikit-learn, XGBoost, ...)
        FileTeacher("outputs/bert_logits.npy"),       # saved logits or probabilities, one row per sample
    ], combine="entropy")
    teacher.prepare(data)                             # data: the kdkit Dataset; once, before training
    log_p = teacher(x, idx)                           # (B, K) log-probabilities; idx from the BatchLoader
    teacher.report()                                  # each teacher's and the combination's val accuracy

Kinds of teacher:
  TorchTeacher  evaluated per batch, on the same (normalised, augmented) view the student sees;
                kept frozen and in eval mode.
  ProbaTeacher  evaluated once per split, in prepare(), on the RAW split arrays: Split.images as
                float32, flattened to (N, C*H*W). uint8 images stay in 0..255 units (not divided by
                255, not normalised); tabular data (from_arrays with (N, F)) gives the original
                (N, F) features. The estimator must have been trained on that same representation;
                pass `transform=` (a function of the (N, C, H, W) numpy images) to build another.
  FileTeacher   saved outputs read from .npy, .safetensors or .parquet (formats: see FileTeacher).

Saved outputs are keyed by sample index: row i of a file belongs to the sample at position i of
the user's original training array (Split.index), so one file serves the train and validation
splits whatever val_fraction or seed a run uses. The training batch is located by `idx`, its
positions in kdkit's train split (what BatchLoader yields), which map to rows of tables
precomputed in prepare().

Classes: the ensemble predicts the dataset's classes in the dataset's order. A teacher that names
its classes has its columns reordered by name; one that does not must have exactly K columns,
assumed to be in the dataset's order.

Combiners (`combine=`):
  mean      average of the teachers' probabilities
  weights   weighted average of probabilities, `weights` one non-negative number per teacher
  entropy   per-sample weights from confidence: w_m(x) = (log K - H(p_m(x))) / sum over teachers
            (uniform when every teacher is maximally uncertain)
  stacker   multinomial logistic regression from the concatenated teacher log-probabilities
            (B, M*K) to the K classes, fitted on the validation split (full-batch L-BFGS, float64,
            L2 penalty 1e-3 on the weights, at most 200 iterations, deterministic). Validation is
            the only data the teachers did not train on, so it is the only honest place to fit
            the stacker; the price is that validation accuracy of the combination (in-sample) and
            of the distilled student (model selection) is then mildly optimistic. Test stays
            untouched.
Averages are taken in log space (logsumexp of log-probabilities plus log weights), in float32.
Probabilities read from estimators or files are floored at PROB_FLOOR and renormalised, so every
log-probability is finite (a hard 0 would turn a KL loss into NaN).
"""
from kdkit.teachers.hybrid import COMBINERS, HybridTeacher, entropy_log_weights, fit_stacker, stacker_features
from kdkit.teachers.sources import (PROB_FLOOR, FileTeacher, ProbaTeacher, TorchTeacher, align, class_order,
                                    flatten_raw, looks_like_probabilities, probabilities_to_log, teacher_from_spec)

__all__ = ["COMBINERS", "PROB_FLOOR", "FileTeacher", "HybridTeacher", "ProbaTeacher", "TorchTeacher", "align",
           "class_order", "entropy_log_weights", "fit_stacker", "flatten_raw", "looks_like_probabilities",
           "probabilities_to_log", "stacker_features", "teacher_from_spec"]
