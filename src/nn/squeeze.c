/* squeeze.c — squeeze_2x2 in both orders, its inverse, and channel chunk / cat. */
#include "flowdp/error.h"
#include "flowdp/nn.h"

fdp_tensor fdp_squeeze(fdp_ctx *ctx, fdp_tensor x, int alt) {
    FDP_CHECK(x.h % 2 == 0 && x.w % 2 == 0, "squeeze: odd spatial size %dx%d", x.h, x.w);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, 4 * x.c, x.h / 2, x.w / 2);
    fdp_squeeze_args a = {x.data, y.data, x.c, x.h, x.w, alt, 0, 0};
    ctx->be->squeeze(ctx->be, fdp_numel(x), &a);
    return y;
}

fdp_tensor fdp_unsqueeze(fdp_ctx *ctx, fdp_tensor x, int alt) {
    FDP_CHECK(x.c % 4 == 0, "unsqueeze: %d channels is not a multiple of 4", x.c);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, x.c / 4, x.h * 2, x.w * 2);
    fdp_squeeze_args a = {x.data, y.data, x.c / 4, x.h * 2, x.w * 2, alt, 1, 0};
    ctx->be->squeeze(ctx->be, fdp_numel(y), &a);
    return y;
}

fdp_tensor fdp_channel_slice(fdp_ctx *ctx, fdp_tensor x, int c0, int nc) {
    FDP_CHECK(c0 >= 0 && c0 + nc <= x.c, "channel slice [%d, %d) of %d channels", c0, c0 + nc, x.c);
    fdp_tensor y = fdp_arena_tensor(ctx->arena, x.n, nc, x.h, x.w);
    fdp_slice_copy_args a = {x.data, y.data, x.c, c0, nc, 0, nc, (int64_t)x.h * x.w, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(y), &a);
    return y;
}

fdp_tensor fdp_channel_cat(fdp_ctx *ctx, fdp_tensor a, fdp_tensor b) {
    FDP_CHECK(a.n == b.n && a.h == b.h && a.w == b.w, "channel cat: shapes differ");
    fdp_tensor y = fdp_arena_tensor(ctx->arena, a.n, a.c + b.c, a.h, a.w);
    int64_t HW = (int64_t)a.h * a.w;
    fdp_slice_copy_args sa = {a.data, y.data, a.c, 0, y.c, 0, a.c, HW, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(a), &sa);
    fdp_slice_copy_args sb = {b.data, y.data, b.c, 0, y.c, a.c, b.c, HW, 1.0f, 0};
    ctx->be->slice_copy(ctx->be, fdp_numel(b), &sb);
    return y;
}
