"""The SIMD helpers of the generated C (loads, stores and adds, masked and strided; two vectors stored interleaved;
lane clearing; max-pool selectors converted and compared with a tap), lane by lane against their definition, for
every mask of lanes and the strides 1, 2 (AVX-512's permutes and masked moves) and 3 (the lane loop), on every
path this CPU runs: the baseline target's 16-byte GCC vectors, AVX2's 32-byte ones and the machine's own
(-march=native). A masked access must leave every other element alone: the harness checks a whole buffer around
it. Built again under AddressSanitizer and UBSan, it checks that no access reads or writes past its lanes'
elements (the kernel tests' sanitizer run builds without -march=native, so it never runs the AVX2 and AVX-512
helpers)."""
import re
import subprocess
from pathlib import Path

import jinja2
import pytest

from codegen.bench import cpu_flags
from conftest import TARGETS, needs_cc
from generated.c._build import SANITIZE

REPO = Path(__file__).resolve().parents[2]

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#define CHECK(c) do { if (!(c)) { printf("FAIL %s: mask %d stride %d\n", #c, mask, s); ++bad; } } while (0)
{% for x, real in (('f', 'float'), ('d', 'double')) %}
static int check_{{ x }}(void)
{
    int bad = 0;
    {{ real }} src[64], dst[64], ref[64];
    for (int i = 0; i < 64; ++i) src[i] = i + 1;
    for (int s = 1; s <= 3; ++s) for (int mask = 0; mask < (1 << BP_LANES_{{ x | upper }}); ++mask) {
        bp_v{{ x }} v = bp_vload_masked_{{ x }}(src, 3, s, mask);
        for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l) CHECK(v[l] == ((mask >> l & 1) ? src[3 + l * s] : 0));
        for (int add = 0; add < 2; ++add) {
            for (int i = 0; i < 64; ++i) dst[i] = ref[i] = -i;
            if (add) bp_vadd_{{ x }}(dst, 2, s, mask, v);
            else bp_vstore_masked_{{ x }}(dst + 2, s, mask, v);
            for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l)
                if (mask >> l & 1) ref[2 + l * s] = add ? ref[2 + l * s] + v[l] : v[l];
            for (int i = 0; i < 64; ++i) CHECK(dst[i] == ref[i]);
        }
    }
    {{ real }} zero = 0;
    for (int mask = 0; mask < (1 << BP_LANES_{{ x | upper }}); ++mask) {   /* kept lanes as they were, the others +0 */
        const int s = 1;
        bp_v{{ x }} v = bp_vload_{{ x }}(src, 1);
        v[mask % BP_LANES_{{ x | upper }}] = zero / zero;
        v[(mask + 1) % BP_LANES_{{ x | upper }}] = -zero;
        const bp_v{{ x }} k = bp_vkeep_{{ x }}(v, mask);
        for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l)
            CHECK((mask >> l & 1) ? k[l] == v[l] || (k[l] != k[l] && v[l] != v[l]) : k[l] == 0 && 1 / k[l] > 0);
    }
    for (int s = 1; s <= 3; ++s) {
        const int mask = -1;
        bp_v{{ x }} v = bp_vload_{{ x }}(src + 1, s);
        for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l) CHECK(v[l] == src[1 + l * s]);
        for (int i = 0; i < 64; ++i) dst[i] = ref[i] = -i;
        bp_vstore_{{ x }}(dst + 1, s, v);
        for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l) ref[1 + l * s] = v[l];
        for (int i = 0; i < 64; ++i) CHECK(dst[i] == ref[i]);
    }
    {   /* max-pool selectors: the mask's int64 elements as int32 lanes, saturated to -1 outside [0, 2^31) (some
           would truncate to a position), -1 in the other lanes; then the lanes of a mask equal to a tap's positions */
        int64_t positions[64];
        for (int i = 0; i < 64; ++i) positions[i] = i % 5 != 4 ? 2 * i : i % 2 ? -3 : ((int64_t)1 << 32) + 2 * i;
        for (int s = 1; s <= 3; s += 2) for (int mask = 0; mask < (1 << BP_LANES_{{ x | upper }}); ++mask) {
            const bp_v{{ x }}p selectors = bp_vselectors_{{ x }}(positions + 1, s, mask);
            for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l) {
                const int64_t p = positions[1 + l * s];
                CHECK(selectors[l] == ((mask >> l & 1) && p >= 0 && p <= 0x7FFFFFFF ? p : -1));
            }
            for (int step = 1; step <= 6; ++step) for (int64_t at = -2; at <= 8; ++at) {
                const int64_t hit = bp_vmatch_{{ x }}(selectors, at, step, mask);
                CHECK(hit >> BP_LANES_{{ x | upper }} == 0);
                for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l)
                    CHECK((hit >> l & 1) == ((mask >> l & 1) && selectors[l] == at + l * step));
            }
        }
    }
    {   /* a pair: a to the even, b to the odd elements, nothing else */
        const int mask = -1, s = 2;
        const bp_v{{ x }} a = bp_vload_{{ x }}(src, 1), b = bp_vload_{{ x }}(src + 20, 1);
        for (int i = 0; i < 64; ++i) dst[i] = ref[i] = -i;
        bp_vstore_pair_{{ x }}(dst + 3, a, b);
        for (int l = 0; l < BP_LANES_{{ x | upper }}; ++l) ref[3 + 2 * l] = a[l], ref[4 + 2 * l] = b[l];
        for (int i = 0; i < 64; ++i) CHECK(dst[i] == ref[i]);
    }
    return bad;
}
static int bounds_{{ x }}(void)
{   /* each access on a heap block that holds exactly the elements from its first lane to its last: under
       AddressSanitizer, a read or write past either end stops the run */
    int bad = 0;
    for (int s = 1; s <= 3; ++s) for (int mask = 1; mask < (1 << BP_LANES_{{ x | upper }}); ++mask) {
        const int first = __builtin_ctz(mask), last = 31 - __builtin_clz(mask), n = (last - first) * s + 1;
        {{ real }} *block = malloc(n * sizeof *block);
        for (int i = 0; i < n; ++i) block[i] = i + 1;
        const int offset = -first * s;
        const bp_v{{ x }} v = bp_vload_masked_{{ x }}(block, offset, s, mask);
        for (int l = first; l <= last; ++l) CHECK(v[l] == ((mask >> l & 1) ? block[offset + l * s] : 0));
        bp_vadd_{{ x }}(block, offset, s, mask, v);
        if (first == 0) {
            bp_vstore_masked_{{ x }}(block, s, mask, v);
            if (last == BP_LANES_{{ x | upper }} - 1) bp_vstore_{{ x }}(block, s, bp_vload_{{ x }}(block, s));
        }
        free(block);
    }
    for (int s = 1; s <= 3; s += 2) for (int mask = 1; mask < (1 << BP_LANES_{{ x | upper }}); mask += 2) {
        const int last = 31 - __builtin_clz(mask), n = last * s + 1;   /* selectors: from lane 0, as the kernels */
        int64_t *block = malloc(n * sizeof *block);
        for (int i = 0; i < n; ++i) block[i] = i;
        const bp_v{{ x }}p selectors = bp_vselectors_{{ x }}(block, s, mask);
        for (int l = 0; l <= last; ++l) CHECK(selectors[l] == ((mask >> l & 1) ? block[l * s] : -1));
        free(block);
    }
    {{ real }} *pair = malloc(2 * BP_LANES_{{ x | upper }} * sizeof *pair);   /* a pair fills its 2 LANES exactly */
    bp_vstore_pair_{{ x }}(pair, bp_vsplat_{{ x }}(1), bp_vsplat_{{ x }}(2));
    for (int i = 0; i < 2 * BP_LANES_{{ x | upper }}; ++i) bad += pair[i] != 1 + i % 2;
    free(pair);
    return bad;
}
{% endfor %}
int main(void)
{
    const int bad = check_f() + check_d() + bounds_f() + bounds_d();
    printf("lanes %d: %d failures\n", BP_LANES_F, bad);
    return bad != 0;
}
"""


def prelude() -> str:
    """The generated pooling file's helpers: everything before the first kernel-independent function that
    follows them (bp_lattice_start), its own header left out."""
    text = (REPO / 'generated' / 'c' / 'bpgen_pool.c').read_text()
    end = text.index('static inline int64_t bp_lattice_start')
    return '#include <stdint.h>\n' + re.sub(r'#include "\w+\.h"', '', text[:end])


PATHS = {'vector': ([], 'sse2'), 'avx2': (TARGETS['avx2'], 'avx2'),
         'native': (['-march=native'], 'sse2')}


@needs_cc
@pytest.mark.parametrize('path', sorted(PATHS))
def test_vector_helpers_match_their_lane_by_lane_definition(tmp_path, path):
    flags, needs = PATHS[path]
    if needs not in cpu_flags():
        pytest.skip(f'the CPU has no {needs}')
    source = prelude() + jinja2.Template(HARNESS).render()
    (tmp_path / 'helpers.c').write_text(source)
    for build_flags in (['-O2'], list(SANITIZE)):   # the kernels' sanitizer flags: the bounds checks
        build = subprocess.run(['cc', *build_flags, '-std=c99', *flags, 'helpers.c', '-o', 'helpers'],
                               cwd=tmp_path, capture_output=True, text=True)
        assert build.returncode == 0, build.stderr[-4000:]
        run = subprocess.run([str(tmp_path / 'helpers')], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and ': 0 failures' in run.stdout, (build_flags, run.stdout[-4000:],
                                                                       run.stderr[-4000:])
