"""The systems the course's documents show, built from `dlcourse.nn`."""
from dlcourse.models.mlp import MLP
from dlcourse.models.cnn import CNN
from dlcourse.models.resnet import BasicBlock, ResNet, resnet18, resnet34
from dlcourse.models.language import CharVocabulary, LSTMLanguageModel
from dlcourse.models.cnn_lstm import CNNLSTM
from dlcourse.models.transformer import TransformerClassifier
from dlcourse.models.autoencoder import Autoencoder, ConvAutoencoder

__all__ = ["MLP", "CNN", "BasicBlock", "ResNet", "resnet18", "resnet34", "CharVocabulary",
           "LSTMLanguageModel", "CNNLSTM", "TransformerClassifier", "Autoencoder", "ConvAutoencoder"]
