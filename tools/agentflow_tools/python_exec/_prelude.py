"""The prelude: Python that runs in the child before the model's code.

It takes its settings from `sys.argv[1:]` (`arguments`), sets the limits, installs the audit
hook, and, where the run has no cgroup, a seccomp filter under which `memfd_create` and
`memfd_secret` fail with ENOSYS: a memfd's memory counts against none of the per-process
limits (one process held 2 GiB under a 1 GiB address-space limit that way), while the usual
fallbacks (`/dev/shm`, `/tmp`) are tmpfs of the scratch size. The filter also refuses system
calls of another ABI (x32, 32-bit), through which the same call would pass under another
number. It is written for x86-64 and AArch64; elsewhere only the descriptor limit bounds
memfds (descriptors x file size per process).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the prelude sets; zero turns a limit off."""

    cpu_seconds: int
    memory_bytes: int
    file_bytes: int
    processes: int
    descriptors: int
    block_network: bool
    deny_memfd: bool

    def arguments(self) -> list[str]:
        values = (self.cpu_seconds, self.memory_bytes, self.file_bytes, self.processes)
        flags = (self.descriptors, self.block_network, self.deny_memfd)
        return [str(int(value)) for value in (*values, *flags)]


PRELUDE = r"""
def _deny_memfd():
    import ctypes, os, struct
    native = {"x86_64": (0xC000003E, 319), "aarch64": (0xC00000B7, 279)}
    if os.uname().machine not in native:
        return
    arch, memfd = native[os.uname().machine]
    deny, allow = 0x00050000 | 38, 0x7FFF0000  # SECCOMP_RET_ERRNO | ENOSYS, SECCOMP_RET_ALLOW
    program = [
        (0x20, 0, 0, 4),  # load the architecture
        (0x15, 1, 0, arch),
        (0x06, 0, 0, deny),
        (0x20, 0, 0, 0),  # load the system call number
        (0x35, 3, 0, 0x40000000),  # x32
        (0x15, 2, 0, memfd),
        (0x15, 1, 0, 447),  # memfd_secret
        (0x06, 0, 0, allow),
        (0x06, 0, 0, deny),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Program(len(program), ctypes.addressof(code))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "the sandbox could not install its seccomp filter")


def _sandbox():
    import ast, resource, sys, traceback, types
    settings = [int(a) for a in sys.argv[1:]]
    cpu, memory, files, processes, descriptors, block_network, deny_memfd = settings
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    if processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    if descriptors:
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
    if deny_memfd:
        _deny_memfd()
    blocked = {
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.fork", "os.forkpty", "pty.spawn",
    }
    if block_network:
        blocked |= {
            "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
            "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        }

    def deny(event, args):
        if event in blocked:
            raise PermissionError(f"{event}: not allowed in this sandbox")

    sys.addaudithook(deny)
    sys.argv = ["main.py"]
    main = types.ModuleType("__main__")
    main.__file__ = "main.py"
    sys.modules["__main__"] = main
    with open("main.py", encoding="utf-8") as file:
        source = file.read()
    try:
        tree = ast.parse(source, "main.py")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "main.py", "exec"), main.__dict__)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "main.py", "eval"), main.__dict__)
            if value is not None:
                print(repr(value))
    except SystemExit:
        raise
    except BaseException as exc:
        own = isinstance(exc, SyntaxError) and exc.filename == "main.py"
        traceback.print_exception(type(exc), exc, None if own else exc.__traceback__.tb_next)
        sys.exit(1)


_sandbox()
"""
