"""Debian packages against a base system (the `apt` source kind, sysext.build.sources.apt).

- version: dpkg's version ordering and relations, and the image version derived from them;
- control: deb822 paragraphs (Packages, status, InRelease) and dependency fields;
- sources_list: the archive this machine's apt already uses (the default mirror);
- archive: the trust chain, InRelease (OpenPGP, the distribution's keys) → Packages (sha256
  listed in InRelease) → .deb (sha256 listed in Packages), and the package index;
- base: what the base image has installed (its dpkg status and file lists, or a default
  minimal install of a named release);
- resolve: the dependency closure of the requested packages minus what the base has;
- debfile: the control and data members of a .deb;
- scripts: which maintainer scripts may be left unrun (nothing is ever run);
- layout: the closure's files as an extension tree (merged /usr, /etc as factory defaults).

Pure parts (version, control, resolve, scripts) do no I/O. An RPM/dnf backend would mirror
this package (docs/packages.md says what it needs).
"""
