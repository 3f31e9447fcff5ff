"""Exact TreeSHAP on the compiled trees, for the SHAP module's explanations (no booster library called).

Algorithm 2 of Lundberg, Erion, Chen, DeGrave, Prutkin, Nair, Katz, Himmelfarb, Bansal & Lee (2020), *From local
explanations to global understanding with explainable AI for trees*, Nat. Mach. Intell. 2: the exact Shapley
values of the "path-dependent" value function, where a split on a feature outside the coalition averages its
children weighted by the training data each received (the node's *cover*). The walk keeps the distinct features
of the path from the root with the fractions of the coalition-free (``z``) and coalition (``o``) paths that flow
through each, and the permutation weights of every subset size (EXTEND / UNWIND / UNWOUND_SUM); a leaf adds
``w · (o − z) · value`` to each path feature. O(T·L·D²) per row: T trees, L leaves, depth D.

The covers, read from each library's dump (``fxgate.models._trees``):

* **XGBoost**: ``sum_hessian`` per node (its JSON model: XGBoost's ``cover``);
* **LightGBM**: ``internal_count`` / ``leaf_count`` (``Tree::data_count``, what its own TreeSHAP weighs by);
* **CatBoost**: ``leaf_weights`` (the training rows per leaf). An oblivious tree is walked as a full binary tree
  the way CatBoost's own TreeSHAP walks it: the root splits on the tree's last split, each level on the one before
  (a right turn at split ``j`` sets bit ``j`` of the leaf index); a node's cover is the sum of its leaves'. The
  order matters: path-dependent TreeSHAP is defined on a binary tree, and the same oblivious tree with its levels
  in another order is another value function with other Shapley values. Attributions and expected value are on
  CatBoost's raw scale (``scale · sum + bias``).

A split's *hot* child (where the row goes) follows the library's rule, the one the compiled evaluator uses
(:func:`fxgate.models._trees.go_left`). A side no training row reached weighs nothing: it is not entered (its
terms are all zero, and entering it would divide 0 by 0).

**Without the walk.** A walk visits every node and copies the path at each; two layouts, built once per model
(:func:`shap_trees`), skip it:

* CatBoost: in an oblivious tree the row's hot side is the same at every node of a level, so the leaf index alone
  decides the tree's attributions: ``table`` holds them for every tree and index (d · 2^d floats a tree, 0.9 MB
  for 300 trees of depth 6), and a row costs one leaf index and d additions a tree;
* XGBoost and LightGBM: a leaf's share depends on the row only through the set of its path features at whose
  splits the row takes the path's side (Yang 2021, *Fast TreeSHAP*, arXiv:2109.09847): :class:`LeafPaths` holds
  every leaf's path flattened (1-2 MB), and a row is explained leaf by leaf from it. (Fast TreeSHAP's "v2"
  tables of each leaf's shares for every such set were tried: 24 MB for the sample's two forests, 2x faster on a
  warm cache but no faster than the walk inside a replay, where they miss the cache.)

The values equal each library's own TreeSHAP (XGBoost's to float32 rounding: its own sums are float32), the shap
package's TreeSHAP run on the same binary trees, and the Shapley values by enumeration of the value function:
``tests/models/test_treeshap.py``. The speed against the libraries is in ``benchmarks/bench_shap.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fxgate.engine.core.jit import kernel
from fxgate.models._trees import CB, FlatForest, FlatOblivious, go_left
from fxgate.models._trees import leaf as leaf_of

__all__ = ["ShapTrees", "margin", "shap_trees", "tree_shap"]


@dataclass
class ShapTrees:
    """One model's trees for TreeSHAP: binary nodes (``left < 0``: a leaf), each with its cover; ``rule`` says
    whose split convention decides the hot child (XGB, LGBM or CB). ``value`` holds leaf values on the margin's
    scale (CatBoost's ``scale`` applied); ``base`` the margin's constant (XGBoost's base margin, CatBoost's bias)."""

    rule: int
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    roots: np.ndarray
    base: float
    expected: float  # base + each tree's expected leaf value under its covers: the attributions' reference point
    depth: int
    n_features: int
    #: CatBoost: the oblivious trees themselves, the split each node tests (its index in the tree, the leaf index's
    #: bit it sets), and every tree's attributions by leaf index
    #: (``table[table_off[t] + leaf · d + j]``: what tree t gives the feature of its split j when the row falls in
    #: ``leaf``; a feature split on twice has its whole share at its first split)
    oblivious: FlatOblivious | None = None
    bit: np.ndarray | None = None
    table: np.ndarray | None = None
    table_off: np.ndarray | None = None
    #: XGBoost and LightGBM: every leaf's path, flattened (:class:`LeafPaths`)
    leaves: LeafPaths | None = None


@dataclass
class LeafPaths:
    """Per leaf ``l`` of a forest: its path (``path_node``/``path_left``/``path_slot`` from ``path_off[l]``: each
    split on the way, the side taken, and which of the leaf's distinct path features it tests), its distinct
    features and their z fractions (``u_feat``, ``u_z`` from ``u_off[l]``; z is the product of the cover ratios of
    the feature's splits on the path) and its value. A leaf's share depends on the row only through which of
    those features' splits all send the row the path's way (their o = 1; Yang 2021, *Fast TreeSHAP*,
    arXiv:2109.09847), so a row is explained leaf by leaf from these arrays, without walking the trees."""

    path_off: np.ndarray
    path_node: np.ndarray
    path_left: np.ndarray
    path_slot: np.ndarray
    u_off: np.ndarray
    u_feat: np.ndarray
    u_z: np.ndarray
    value: np.ndarray


def _depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> int:
    deepest = 0
    for r in roots.tolist():
        stack = [(r, 0)]
        while stack:
            node, d = stack.pop()
            deepest = max(deepest, d)
            if left[node] >= 0:
                stack += [(int(left[node]), d + 1), (int(right[node]), d + 1)]
    return deepest


def _expected_py(value, cover, left, right, roots):  # type: ignore[no-untyped-def]
    """Σ over trees of Σ_leaf value · cover(leaf) / cover(root)."""
    total = 0.0
    stack = np.empty(left.shape[0] + 1, dtype=np.int64)  # a depth-first stack never holds more than every node
    for t in range(roots.shape[0]):
        root = roots[t]
        if left[root] < 0:  # a one-leaf tree: its value whatever the row (its cover may be missing)
            total += value[root]
            continue
        if cover[root] <= 0.0:
            continue
        top = 0
        stack[0] = root
        acc = 0.0
        while top >= 0:
            node = stack[top]
            top -= 1
            if left[node] < 0:
                acc += value[node] * cover[node]
            else:
                stack[top + 1] = left[node]
                stack[top + 2] = right[node]
                top += 2
        total += acc / cover[root]
    return total


_expected = kernel(_expected_py, fastmath=False)


def shap_trees(m: FlatForest | FlatOblivious) -> ShapTrees:
    """The TreeSHAP layout of a compiled binary-class model (one margin column)."""
    if m.n_class != 1:
        raise ValueError(f"TreeSHAP here explains one-margin (binary) models; this one has {m.n_class} classes")
    if isinstance(m, FlatForest):
        if m.cover is None or not np.all(np.isfinite(m.cover)) or np.any(m.cover < 0):
            raise ValueError(
                "this compiled model has no (or invalid) node covers, which TreeSHAP needs: it was flattened from "
                "a dump without them. Fix: flatten it again from the booster (fxgate.models._trees)"
            )
        d = _depth(m.left, m.right, m.roots)
        base = float(m.base[0])
        t = ShapTrees(
            m.rule,
            m.feature,
            m.threshold,
            m.left,
            m.right,
            m.default_left,
            m.missing,
            m.value,
            m.cover,
            m.roots,
            base,
            base,
            d,
            m.n_features,
        )
    else:
        t = _oblivious_as_binary(m)
    split = t.left[t.roots] >= 0
    if np.any(split & ~(t.cover[t.roots] > 0.0)):
        raise ValueError(
            "a tree of this model has no cover at its root (its dump carried no counts or hessians), so TreeSHAP "
            "cannot weigh its splits. Fix: flatten it again from the booster (fxgate.models._trees)"
        )
    t.expected = t.base + float(_expected(t.value, t.cover, t.left, t.right, t.roots))
    if t.oblivious is None:
        t.leaves = _leaf_paths(t)  # None on a path of more than MAX_PATH_FEATURES distinct features: rows walk
    else:
        sizes = np.diff(t.oblivious.split_off) << np.diff(t.oblivious.split_off)  # d · 2^d per tree
        t.table_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        t.table = np.zeros(int(t.table_off[-1]))
        _oblivious_table(
            t.left,
            t.right,
            t.feature,
            t.value,
            t.cover,
            t.roots,
            t.bit,
            t.oblivious.split_off,
            t.oblivious.split_feature,
            t.depth,
            t.n_features,
            t.table,
            t.table_off,
        )
    return t


#: a leaf's agreement pattern is a bit set of its distinct path features in an int64: a forest with a longer path
#: (an unlimited-depth LightGBM or XGBoost model) is explained by the walk
MAX_PATH_FEATURES = 62


def _leaf_paths(t: ShapTrees) -> LeafPaths | None:
    """Enumerate every leaf's path (:class:`LeafPaths`); None when one has more than ``MAX_PATH_FEATURES``
    distinct features."""
    path_off, path_node, path_left, path_slot = [0], [], [], []
    u_off, u_feat, u_z, leaf_value = [0], [], [], []
    left, right, feature, cover = t.left.tolist(), t.right.tolist(), t.feature.tolist(), t.cover.tolist()
    for r in t.roots.tolist():
        if left[r] < 0 or not cover[r] > 0.0:
            continue  # a one-leaf tree (its value is in ``expected``) or one with no cover: no attributions
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(r, [])]
        while stack:
            node, path = stack.pop()
            if left[node] >= 0:
                stack.append((right[node], [*path, (node, False)]))
                stack.append((left[node], [*path, (node, True)]))
                continue
            feats: list[int] = []
            zs: list[float] = []
            for nd, went_left in path:
                f = feature[nd]
                child = left[nd] if went_left else right[nd]
                ratio = cover[child] / cover[nd] if cover[nd] > 0.0 else 0.0
                if f in feats:
                    zs[feats.index(f)] *= ratio
                else:
                    feats.append(f)
                    zs.append(ratio)
                path_node.append(nd)
                path_left.append(went_left)
                path_slot.append(feats.index(f))
            if len(feats) > MAX_PATH_FEATURES:
                return None
            path_off.append(len(path_node))
            u_feat += feats
            u_z += zs
            u_off.append(len(u_feat))
            leaf_value.append(float(t.value[node]))
    return LeafPaths(
        np.array(path_off, np.int64),
        np.array(path_node, np.int64),
        np.array(path_left, np.bool_),
        np.array(path_slot, np.int64),
        np.array(u_off, np.int64),
        np.array(u_feat, np.int64),
        np.array(u_z),
        np.array(leaf_value),
    )


def _oblivious_as_binary(m: FlatOblivious) -> ShapTrees:
    """CatBoost's oblivious trees as full binary trees, CatBoost's way: the root splits on the tree's last split
    (d − 1) and level ℓ on split d − 1 − ℓ; a right turn at split j sets bit j of the leaf index Σ b_j 2^j; covers
    are sums of the leaf weights below. (Path-dependent TreeSHAP depends on the binary form: the same oblivious
    tree with its levels in another order is another value function, with other Shapley values. This is the order
    CatBoost's own ``ShapValues`` walk, which these values equal.)"""
    if m.leaf_weights is None or not np.all(np.isfinite(m.leaf_weights)) or np.any(m.leaf_weights < 0):
        raise ValueError(
            "this compiled CatBoost model has no (or invalid) leaf weights, which TreeSHAP needs: its JSON export "
            "carried none. Fix: refit it with a CatBoost that exports leaf_weights (1.0 and later do)"
        )
    feats: list[int] = []
    thr: list[float] = []
    lft: list[int] = []
    rgt: list[int] = []
    dl: list[bool] = []
    val: list[float] = []
    cov: list[float] = []
    bit: list[int] = []
    roots: list[int] = []
    depth = 0
    for t in range(len(m.split_off) - 1):
        s0, s1 = int(m.split_off[t]), int(m.split_off[t + 1])
        d = s1 - s0
        depth = max(depth, d)
        lo = int(m.leaf_off[t])

        def add(level: int, idx: int, s0: int = s0, d: int = d, lo: int = lo) -> int:
            i = len(feats)
            feats.append(0)
            thr.append(0.0)
            lft.append(-1)
            rgt.append(-1)
            dl.append(True)
            val.append(0.0)
            cov.append(0.0)
            bit.append(d - 1 - level)
            if level == d:
                val[i] = float(m.scale) * float(m.leaf_values[lo + idx])
                cov[i] = float(m.leaf_weights[(lo // m.n_class) + idx])
                return i
            j = d - 1 - level
            f = int(m.split_feature[s0 + j])
            feats[i] = f
            thr[i] = float(m.border[s0 + j])
            dl[i] = not bool(m.nan_true[f])  # NaN sets the bit (goes right) iff the feature's NaN is "true"
            a = add(level + 1, idx)
            b = add(level + 1, idx | (1 << j))
            lft[i], rgt[i] = a, b
            cov[i] = cov[a] + cov[b]
            return i

        roots.append(add(0, 0))
    n = len(feats)
    return ShapTrees(
        CB,
        np.array(feats, np.int64),
        np.array(thr),
        np.array(lft, np.int64),
        np.array(rgt, np.int64),
        np.array(dl, bool),
        np.zeros(n, np.int8),
        np.array(val),
        np.array(cov),
        np.array(roots, np.int64),
        float(m.bias[0]),
        float(m.bias[0]),
        depth,
        m.n_features,
        m,
        np.array(bit, np.int64),
    )


# -- the algorithm (Lundberg et al. 2020, Algorithm 2) -----------------------------------------------------------
# A path lives in one segment of the buffers pd (feature), pz, po (fractions) and pw (permutation weights): the
# node at depth k owns segment k (offset k · step), copies its parent's path into it and extends it.
#
# Arithmetic. A one-fraction is always 0 or 1 here (a hot child inherits its feature's earlier o, which starts at
# 1; a cold child gets 0), so the algorithm's divisions by o vanish, and its ratios of small integers are read from
# a table (``_ratios``) instead of divided on every step: UNWOUND_SUM's loop is a chain (each step needs the last),
# and a division on it cost a third of the time. The values are the same up to the last bit or two.
R_EXT_UP, R_EXT_DOWN, R_UP, R_DOWN, R_ZERO = 0, 1, 2, 3, 4


def _ratios_py(size):  # type: ignore[no-untyped-def]
    """r[k, n, i] for paths up to ``size`` entries: EXTEND's (i + 1)/(n + 1) and (n − i)/(n + 1) (n the length
    before the append), UNWIND's n/(i + 1), (n − 1 − i)/n and n/(n − 1 − i) (n the length, i < n − 1)."""
    r = np.zeros((5, size + 1, size + 1))
    for n in range(size + 1):
        for i in range(n):
            r[R_EXT_UP, n, i] = (i + 1) / (n + 1)
            r[R_EXT_DOWN, n, i] = (n - i) / (n + 1)
        for i in range(n - 1):
            r[R_UP, n, i] = n / (i + 1)
            r[R_DOWN, n, i] = (n - 1 - i) / n
            r[R_ZERO, n, i] = n / (n - 1 - i)
    return r


def _extend_py(pd, pz, po, pw, off, n, z, o, d, r):  # type: ignore[no-untyped-def]
    """EXTEND: append feature ``d`` with fractions (z, o) to the path of length ``n`` at ``off``."""
    pd[off + n], pz[off + n], po[off + n] = d, z, o
    pw[off + n] = 1.0 if n == 0 else 0.0
    for i in range(n - 1, -1, -1):
        w = pw[off + i]
        pw[off + i + 1] += o * w * r[R_EXT_UP, n, i]
        pw[off + i] = z * w * r[R_EXT_DOWN, n, i]


def _unwind_py(pd, pz, po, pw, off, n, i, r):  # type: ignore[no-untyped-def]
    """UNWIND: remove entry ``i`` from the path of length ``n`` (undoing its EXTEND); returns the new length."""
    last = n - 1
    z = pz[off + i]
    if po[off + i] != 0.0:
        nxt = pw[off + last]
        for j in range(last - 1, -1, -1):
            t = pw[off + j]
            w = nxt * r[R_UP, n, j]
            pw[off + j] = w
            nxt = t - w * z * r[R_DOWN, n, j]
    else:
        inv = 1.0 / z
        for j in range(last - 1, -1, -1):
            pw[off + j] = pw[off + j] * r[R_ZERO, n, j] * inv
    for j in range(i, last):
        pd[off + j], pz[off + j], po[off + j] = pd[off + j + 1], pz[off + j + 1], po[off + j + 1]
    return n - 1


def _unwound_sum_py(pz, po, pw, off, n, i, r):  # type: ignore[no-untyped-def]
    """UNWOUND_SUM: the total permutation weight of the path of length ``n`` were entry ``i`` unwound."""
    last = n - 1
    z = pz[off + i]
    total = 0.0
    if po[off + i] != 0.0:
        nxt = pw[off + last]
        for j in range(last - 1, -1, -1):
            t = nxt * r[R_UP, n, j]
            total += t
            nxt = pw[off + j] - t * z * r[R_DOWN, n, j]
        return total
    for j in range(last - 1, -1, -1):
        total += pw[off + j] * r[R_ZERO, n, j]
    return total / z


_ratios = kernel(_ratios_py, fastmath=False)
_extend = kernel(_extend_py, fastmath=False, inline=True)
_unwind = kernel(_unwind_py, fastmath=False, inline=True)
_unwound_sum = kernel(_unwound_sum_py, fastmath=False, inline=True)


def _tree_py(root, hot_left, trees, bufs, phi):  # type: ignore[no-untyped-def]
    """RECURSE over one tree, with an explicit stack (level k: its node ``snode[k]``, its path's length ``sn[k]``
    after the unwind of a repeated feature, the fractions that feature had ``sz[k, :]``, and whether its hot child
    (``sphase[k]`` 1) or both (2) are done). A child is entered with (z, o) and the path of its parent. ``trees``:
    (left, right, feature, value, cover); ``bufs``: :func:`_buffers`."""
    left, right, feature, value, cover = trees
    step, pd, pz, po, pw, sn, sphase, snode, sz, r = bufs
    # enter the root: an empty path extended by the dummy entry (feature -1, z = o = 1)
    k = 0
    node = root
    n_parent = 0
    z, o, d = 1.0, 1.0, -1
    while True:
        # -- enter ``node`` at level k with (z, o, d); its parent's path is segment k - 1 (none at the root)
        off = k * step
        if k > 0:
            src = off - step
            for j in range(n_parent):
                pd[off + j], pz[off + j], po[off + j], pw[off + j] = pd[src + j], pz[src + j], po[src + j], pw[src + j]
        _extend(pd, pz, po, pw, off, n_parent, z, o, d, r)
        n = n_parent + 1
        if left[node] < 0:
            v = value[node]
            for i in range(1, n):
                w = _unwound_sum(pz, po, pw, off, n, i, r)
                phi[pd[off + i]] += w * (po[off + i] - pz[off + i]) * v
        else:
            f = feature[node]
            iz, io = 1.0, 1.0
            for j in range(1, n):
                if pd[off + j] == f:
                    iz, io = pz[off + j], po[off + j]
                    n = _unwind(pd, pz, po, pw, off, n, j, r)
                    break
            snode[k], sn[k], sphase[k], sz[k, 0], sz[k, 1] = node, n, 0, iz, io
            k += 1
            # fall through to the descent below with the level just pushed
        # -- find the next child to enter: the deepest pushed level with a child left
        entered = False
        while k > 0:
            lv = k - 1
            nd = snode[lv]
            ph = sphase[lv]
            sphase[lv] = ph + 1
            c = cover[nd]
            iz, io = sz[lv, 0], sz[lv, 1]
            if ph == 0:
                child = left[nd] if hot_left[nd] else right[nd]
                cz, co = (iz * cover[child] / c if c > 0.0 else 0.0), io
            elif ph == 1:
                child = right[nd] if hot_left[nd] else left[nd]
                cz, co = (iz * cover[child] / c if c > 0.0 else 0.0), 0.0
            else:
                k -= 1  # both children done: back to the parent's level
                continue
            if cz == 0.0 and co == 0.0:
                continue  # nothing flows into this child: every term under it is zero (module docstring)
            node, n_parent, z, o, d = child, sn[lv], cz, co, feature[nd]
            entered = True
            break
        if not entered:
            return


_tree = kernel(_tree_py, fastmath=False)


def _buffers_py(depth):  # type: ignore[no-untyped-def]
    step = depth + 2  # the longest path: the dummy entry and one per level
    levels = depth + 1
    size = step * levels
    return (
        step,
        np.zeros(size, dtype=np.int64),
        np.zeros(size),
        np.zeros(size),
        np.zeros(size),
        np.zeros(levels, dtype=np.int64),
        np.zeros(levels, dtype=np.int64),
        np.zeros(levels, dtype=np.int64),
        np.zeros((levels, 2)),
        _ratios(step),
    )


_buffers = kernel(_buffers_py, fastmath=False)


def _hot_left_py(x, feature, threshold, left, default_left, missing, rule, out):  # type: ignore[no-untyped-def]
    """out[node] = the row goes left at ``node`` (internal nodes; leaves untouched)."""
    for node in range(left.shape[0]):
        if left[node] >= 0:
            out[node] = go_left(x[feature[node]], threshold[node], default_left[node], missing[node], rule)


_hot_left = kernel(_hot_left_py, fastmath=False)


def _shap_py(x, feature, threshold, left, right, default_left, missing, value, cover, roots, rule, depth, phi):  # type: ignore[no-untyped-def]
    hot_left = np.zeros(left.shape[0], dtype=np.bool_)
    _hot_left(x, feature, threshold, left, default_left, missing, rule, hot_left)
    bufs = _buffers(depth)
    for t in range(roots.shape[0]):
        root = roots[t]
        if left[root] >= 0 and cover[root] > 0.0:
            _tree(root, hot_left, (left, right, feature, value, cover), bufs, phi)


_shap = kernel(_shap_py, fastmath=False)


def _oblivious_table_py(
    left, right, feature, value, cover, roots, bit, split_off, split_feature, depth, n_features, table, table_off
):  # type: ignore[no-untyped-def]
    """Fill ``table`` (ShapTrees.table): for every tree and every leaf index, the walk above with the hot child of
    each node the side its split's bit of the index says. In an oblivious tree a row's hot side at a level is the
    same at every node of it, so the index alone decides the tree's attributions."""
    bufs = _buffers(depth)
    hot_left = np.zeros(left.shape[0], dtype=np.bool_)
    phi = np.zeros(n_features)
    n_trees = roots.shape[0]
    for t in range(n_trees):
        root = roots[t]
        end = roots[t + 1] if t + 1 < n_trees else left.shape[0]
        d = split_off[t + 1] - split_off[t]
        if left[root] < 0 or not cover[root] > 0.0:
            continue
        for leaf in range(1 << d):
            for node in range(root, end):
                if left[node] >= 0:
                    hot_left[node] = ((leaf >> bit[node]) & 1) == 0
            _tree(root, hot_left, (left, right, feature, value, cover), bufs, phi)
            base = table_off[t] + leaf * d
            for j in range(d):
                f = split_feature[split_off[t] + j]
                table[base + j] = phi[f]
                phi[f] = 0.0


_oblivious_table = kernel(_oblivious_table_py, fastmath=False)


def _leaf_shap_py(hot_left, path_off, path_node, path_left, path_slot, u_off, u_feat, u_z, value, depth, phi):  # type: ignore[no-untyped-def]
    """Add every leaf's share to ``phi``: its distinct path features' o (1 when the row takes the path's side at
    every split of the feature on it), the path of (z, o) extended feature by feature from the dummy entry, then
    each one's UNWOUND_SUM · (o − z) · value. A feature with z = o = 0 carries no flow (the walk does not enter
    that side): the leaf gives nothing."""
    step, pd, pz, po, pw, sn, sphase, snode, sz, ratios = _buffers(depth)
    for leaf in range(u_off.shape[0] - 1):
        a = u_off[leaf]
        k = u_off[leaf + 1] - a
        pat = (1 << k) - 1
        for j in range(path_off[leaf], path_off[leaf + 1]):
            if hot_left[path_node[j]] != path_left[j]:
                pat &= ~(1 << path_slot[j])
        dead = False
        for u in range(k):
            if u_z[a + u] == 0.0 and ((pat >> u) & 1) == 0:
                dead = True
        if dead:
            continue
        _extend(pd, pz, po, pw, 0, 0, 1.0, 1.0, -1, ratios)
        for u in range(k):
            _extend(pd, pz, po, pw, 0, u + 1, u_z[a + u], float((pat >> u) & 1), u_feat[a + u], ratios)
        v = value[leaf]
        n = k + 1
        for i in range(1, n):
            w = _unwound_sum(pz, po, pw, 0, n, i, ratios)
            phi[pd[i]] += w * (po[i] - pz[i]) * v


_leaf_shap = kernel(_leaf_shap_py, fastmath=False)


def _oblivious_shap_py(x, split_off, split_feature, border, nan_true, table, table_off, phi):  # type: ignore[no-untyped-def]
    """Add every tree's tabled attributions at the row's leaf index (the bits as ``_trees._oblivious_py`` sets
    them) to ``phi``."""
    for t in range(split_off.shape[0] - 1):
        s0 = split_off[t]
        d = split_off[t + 1] - s0
        idx = 0
        for j in range(d):
            f = split_feature[s0 + j]
            v = x[f]
            bit = nan_true[f] if np.isnan(v) else np.float32(v) > border[s0 + j]
            if bit:
                idx |= 1 << j
        base = table_off[t] + idx * d
        for j in range(d):
            phi[split_feature[s0 + j]] += table[base + j]


_oblivious_shap = kernel(_oblivious_shap_py, fastmath=False)


def _leaf_sum_py(x, feature, threshold, left, right, default_left, missing, value, roots, rule):  # type: ignore[no-untyped-def]
    """Σ over trees of the value of the leaf the row reaches, in float64."""
    total = 0.0
    for t in range(roots.shape[0]):
        total += value[leaf_of(x, roots[t], feature, threshold, left, right, default_left, missing, rule)]
    return total


_leaf_sum = kernel(_leaf_sum_py, fastmath=False)


def _row(t: ShapTrees, x: np.ndarray) -> np.ndarray:
    z = np.ascontiguousarray(x, dtype=np.float64).ravel()
    if z.shape[0] != t.n_features:  # the kernels index the row by feature, unchecked
        raise ValueError(f"TreeSHAP needs a row of {t.n_features} features; got {z.shape[0]}")
    return z


def margin(t: ShapTrees, x: np.ndarray) -> float:
    """The model's raw margin on the row as TreeSHAP's trees hold it: ``base`` plus the row's leaves summed in
    float64 (XGBoost's own margin sums its float32 leaves in float32, so it differs by float32 rounding). The
    attributions of :func:`tree_shap` add up to it minus ``t.expected`` to float64 rounding."""
    z = _row(t, x)
    return t.base + float(
        _leaf_sum(z, t.feature, t.threshold, t.left, t.right, t.default_left, t.missing, t.value, t.roots, t.rule)
    )


def tree_shap(t: ShapTrees, x: np.ndarray, *, walk: bool = False) -> np.ndarray:
    """The TreeSHAP attributions (float64, one per feature) of the row ``x`` (the features the model sees): they add
    up to the model's margin minus ``t.expected``."""
    z = _row(t, x)
    phi = np.zeros(t.n_features)
    if t.table is not None and not walk:
        o = t.oblivious
        assert o is not None and t.table_off is not None
        _oblivious_shap(z, o.split_off, o.split_feature, o.border, o.nan_true, t.table, t.table_off, phi)
        return phi
    if t.leaves is not None and not walk:
        lp = t.leaves
        hot_left = np.zeros(t.left.shape[0], dtype=np.bool_)
        _hot_left(z, t.feature, t.threshold, t.left, t.default_left, t.missing, t.rule, hot_left)
        _leaf_shap(
            hot_left,
            lp.path_off,
            lp.path_node,
            lp.path_left,
            lp.path_slot,
            lp.u_off,
            lp.u_feat,
            lp.u_z,
            lp.value,
            t.depth,
            phi,
        )
        return phi
    _shap(
        z,
        t.feature,
        t.threshold,
        t.left,
        t.right,
        t.default_left,
        t.missing,
        t.value,
        t.cover,
        t.roots,
        t.rule,
        t.depth,
        phi,
    )
    return phi
