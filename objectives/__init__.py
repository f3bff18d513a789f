"""The Keras MLP objective: data, model, optimizers, callbacks and search space.

It knows Keras and Optuna trials, and nothing of storage or the command line. Importing this
package imports no TensorFlow; `objectives.mlp` and `objectives.model` do.
"""
