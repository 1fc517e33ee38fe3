import Link from "next/link";

export default function NotFound() {
  return (
    <div className="page page--narrow">
      <div className="empty">
        <h1>Page not found</h1>
        <p className="muted">There is nothing at this address.</p>
        <Link className="btn" href="/">
          Go to the library
        </Link>
      </div>
    </div>
  );
}
