"""The model that ships with pytransformer (installed as pytransformer.shipped).

dates/          the dates model directory: config.json, model.safetensors, vocab.json
dates_data.py   the seeded generator of human-written dates it was trained and is tested on
train_dates.py  the PyTorch script that trained it (python weights/train_dates.py)
"""
