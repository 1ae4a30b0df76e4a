#include "cresnet/backend.h"

cr_conv_shape cr_conv_shape_make(int batch, int in_h, int in_w, int in_c, int out_c, int kernel,
                                 int stride, int pad) {
    cr_conv_shape s = {.batch = batch,
                       .in_h = in_h,
                       .in_w = in_w,
                       .in_c = in_c,
                       .out_c = out_c,
                       .kernel = kernel,
                       .stride = stride,
                       .pad = pad};
    s.out_h = (in_h + 2 * pad - kernel) / stride + 1;
    s.out_w = (in_w + 2 * pad - kernel) / stride + 1;
    return s;
}
