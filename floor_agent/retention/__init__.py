"""Image retention: completed jobs lose their images over SFTP, with a signed receipt."""
