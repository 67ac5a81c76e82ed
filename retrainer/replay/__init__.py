"""`retrainer replay`: the proof that the loop works, on a labelled, time-ordered CSV (driver.py), beside
a model never retrained and blind periodic retraining (baselines.py). Not a production layer: like the
demo it starts a worker of its own and drives simulated time."""
