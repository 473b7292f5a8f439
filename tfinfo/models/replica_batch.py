"""A replica's rows of a training batch, the global batch, and its interleaved parts."""

import tensorflow as tf


class ReplicaBatch:
    """A replica's batch `(x, onehot)` and, under a strategy with several replicas, the
    global batch: all-gathered rows in replica order, this replica's rows among them.

    Without a strategy (or with one replica) every method is the identity on the local
    rows. `part(t, index, parts)` gives the rows of global part `index` (global rows
    `index, index + parts, ...`) that this replica holds, so that the parts of a global
    batch are the same whether one device or several replicas hold it (a contiguous
    split of each replica's rows would not be).

    Args:
        x: this replica's inputs.
        onehot: this replica's one-hot labels.
        regularizers: the regularizers that will score this batch; the global `x` and
            labels are all-gathered (as `all_x`, `all_onehot`) unless every one of them
            gathers its inputs itself (`cross_replica=True`). `()` gathers nothing.

    Example (inside a replica's `train_step`):

    >>> whole = ReplicaBatch(x, onehot)
    >>> critic_part, network_part = whole.split(2, (x_regularizer, y_regularizer))
    >>> z = whole.part(representation, 1, 2)   # the network part's rows of this replica
    """

    def __init__(self, x, onehot, regularizers=()):
        context = tf.distribute.get_replica_context()
        self.context = context if context is not None and context.num_replicas_in_sync > 1 else None
        self.x, self.onehot = x, onehot
        self.all_x, self.all_onehot = x, onehot
        if self.context is None:
            return
        size = tf.shape(x)[:1]
        sizes = self.context.all_gather(size, axis=0)
        replica = tf.cast(self.context.replica_id_in_sync_group, tf.int32)
        self.start = tf.reduce_sum(tf.where(tf.range(tf.shape(sizes)[0]) < replica, sizes, tf.zeros_like(sizes)))
        self.size = size[0]
        self.total = tf.reduce_sum(sizes)
        if not all(self.gathers(reg) for reg in regularizers):
            self.all_x = self.context.all_gather(x, axis=0)
            self.all_onehot = self.context.all_gather(onehot, axis=0)

    def gathers(self, regularizer):
        """Whether `regularizer` gathers the global batch itself (so it takes local rows)."""
        return self.context is not None and bool(getattr(regularizer, "cross_replica", False))

    def gather(self, t):
        """The global batch's rows of `t` (gradients flow back to this replica's rows)."""
        return t if self.context is None else self.context.all_gather(t, axis=0)

    def global_shape(self, t):
        """The shape of `t` with the global batch size."""
        shape = tf.shape(t)
        return shape if self.context is None else tf.concat([tf.reshape(self.total, [1]), shape[1:]], axis=0)

    def local_rows(self, t):
        """This replica's rows of a global-batch tensor."""
        return t if self.context is None else t[self.start : self.start + self.size]

    def part(self, t, index, parts):
        """This replica's rows of `t` (local rows, aligned with `x`) in global part `index`
        of `parts`: the global rows `index, index + parts, index + 2 * parts, ...`."""
        if parts == 1:
            return t
        if self.context is None:
            return t[index::parts]
        return t[tf.math.floormod(index - self.start, parts) :: parts]

    def split(self, parts, regularizers=()):
        """The `parts` interleaved parts of this batch, each a `ReplicaBatch` of its own."""
        return [
            ReplicaBatch(self.part(self.x, i, parts), self.part(self.onehot, i, parts), regularizers)
            for i in range(parts)
        ]
