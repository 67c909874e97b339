/* ProcessPrng for Wine 8, whose bcryptprimitives.dll lacks it: Rust's std (1.78 and later)
 * draws its random bytes from it. Fills the buffer from RtlGenRandom, exported by advapi32 as
 * SystemFunction036, which takes at most a ULONG of bytes per call. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    const SIZE_T most = 1u << 30;
    for (SIZE_T done = 0; done < length;) {
        SIZE_T n = length - done < most ? length - done : most;
        if (!SystemFunction036(data + done, (ULONG)n))
            return FALSE;
        done += n;
    }
    return TRUE;
}
