"""gestural: discover articulatory gestures in EMA kinematics.

An utterance X (12 channels x frames) is factorized into gesture kernels W
(num_gestures x 12 x win_size) convolved with sparse non-negative gestural
scores H (num_gestures x frames), learned by a convolutive auto-encoder.
"""

__version__ = "0.1.0"
