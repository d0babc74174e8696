"""Inference with a trained run (`lens predict`): every fold model and their ensemble.

models.py    find and rebuild the fold models of RUN/<stage>/fold_<K>/ (model.pt)
data.py      the images: a packed file, or a folder packed on the fly like the training file
run.py       batched, blocked inference over a range of rows; ``predict`` (the command)
output.py    PRED.h5 and PRED.csv, written block by block, atomically
evaluate.py  metrics of the ensemble and of each fold model on labeled images, ROC figure
montage.py   the top K images of a class, as a list and as one picture
finish.py    what follows the prediction file: metrics, ROC, top K, montage
shards.py    survey scale: shard_range, predict_shard, merge_parts
"""
