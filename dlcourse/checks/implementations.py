"""Library implementations that several chapters' parts forbid (`Part.forbids`), named once.

The softmax family answers chapter 3's softmax-cross-entropy gradient, chapter 4's softmax and
chapter 5's log-softmax and cross-entropy; the recurrent family answers chapters 10 and 11
(LSTM and GRU share RNN's machinery: RNNBase, the step functions).
"""

SOFTMAX_IMPLEMENTATIONS = (
    "dlcourse.nn.Softmax",
    "dlcourse.nn.LogSoftmax",
    "dlcourse.nn.activation._log_softmax",
    "dlcourse.nn.CrossEntropyLoss",        # its forward computes the softmax (its backward is softmax − one-hot)
    "scipy.special.softmax",
    "scipy.special.log_softmax",
    "scipy.special.logsumexp",
)

RECURRENT_IMPLEMENTATIONS = (
    "dlcourse.nn.RNN",
    "dlcourse.nn.RNNCell",
    "dlcourse.nn.LSTM",
    "dlcourse.nn.LSTMCell",
    "dlcourse.nn.GRU",
    "dlcourse.nn.GRUCell",
    "dlcourse.nn.rnn.RNNBase",
    "dlcourse.nn.rnn.RNNCellBase",
    "dlcourse.nn.rnn.rnn_tanh_step",
    "dlcourse.nn.rnn.rnn_tanh_step_backward",
    "dlcourse.nn.rnn.rnn_relu_step",
    "dlcourse.nn.rnn.rnn_relu_step_backward",
    "dlcourse.nn.rnn.lstm_step",
    "dlcourse.nn.rnn.lstm_step_backward",
    "dlcourse.nn.rnn.lstm_sequence",
    "dlcourse.nn.rnn.lstm_sequence_backward",
    "dlcourse.nn.rnn.gru_step",
    "dlcourse.nn.rnn.gru_step_backward",
    "dlcourse.models.LSTMLanguageModel",
    "dlcourse.models.CNNLSTM",
)
