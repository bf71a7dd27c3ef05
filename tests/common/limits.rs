//! Resource limits a child process lowers for itself alone.

/// Sets the soft limit `resource` to `soft` (the hard one stays); returns
/// the soft limit it had.
pub fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid `rlimit` for the call to fill and read.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    let had = limit.rlim_cur;
    limit.rlim_cur = soft;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(resource, &limit) };
    assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
    had
}

/// The lowest descriptor number this process has free: with it as the
/// limit, every open fails with `EMFILE` (a descriptor must be below the
/// limit, and the kernel gives the lowest free one), while every descriptor
/// open now stays usable.
pub fn lowest_free_descriptor() -> libc::rlim_t {
    (0..)
        // SAFETY: `F_GETFD` only asks whether the descriptor is open.
        .find(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1)
        .map(|fd| fd as libc::rlim_t)
        .expect("some descriptor is free")
}
