/* channels.c — channel chunk / cat of NCHW tensors (nn.h). */
#include "flowdp/error.h"
#include "flowdp/nn.h"

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
